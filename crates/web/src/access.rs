//! Access lines in a written format (`access_log_format` = `combined`,
//! `json` or a template) for the web tier: what the client asked, taken as
//! the request arrives ([`Arrival`]), written with the response's status
//! once its head is ready. The body bytes are its length when known before
//! sending (static files, sized proxied answers), else unknown (`-`), and
//! the request time runs to the response head.
use bulwark_telemetry::{AccessLog, AccessRecord};
use http::header::{HOST, REFERER, USER_AGENT};
use http::{Request, Response, Version};
use http_body::Body;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

/// The request as it arrived.
pub(crate) struct Arrival {
    time: SystemTime,
    started: Instant,
    client: SocketAddr,
    method: http::Method,
    uri: String,
    version: Version,
    headers: http::HeaderMap,
}

impl Arrival {
    pub(crate) fn new<B>(req: &Request<B>, client: SocketAddr) -> Self {
        let mut headers = http::HeaderMap::new();
        for name in [REFERER, USER_AGENT, HOST, bulwark_proxy::X_REQUEST_ID] {
            if let Some(v) = req.headers().get(&name) {
                headers.insert(name, v.clone());
            }
        }
        Arrival {
            time: SystemTime::now(),
            started: Instant::now(),
            client,
            method: req.method().clone(),
            uri: req.uri().path_and_query().map_or_else(|| req.uri().to_string(), |p| p.as_str().to_owned()),
            version: req.version(),
            headers,
        }
    }

    /// Write the line for `resp` to `log`.
    pub(crate) fn write<B: Body>(&self, log: &AccessLog, resp: &Response<B>) {
        let header = |name| self.headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
        let request_id =
            self.headers.get(bulwark_proxy::X_REQUEST_ID).filter(|v| bulwark_proxy::request_id::is_valid(v));
        let protocol = match self.version {
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        log.write(&AccessRecord {
            remote_addr: self.client.ip(),
            time: self.time,
            method: self.method.as_str(),
            uri: &self.uri,
            protocol,
            status: resp.status().as_u16(),
            body_bytes: resp.body().size_hint().exact(),
            referer: header(REFERER),
            user_agent: header(USER_AGENT),
            host: header(HOST),
            request_id: request_id.and_then(|v| v.to_str().ok()),
            route: "web",
            upstream: None,
            retries: 0,
            queue_us: None,
            connect_us: None,
            upstream_header_us: None,
            request_time_us: self.started.elapsed().as_micros() as u64,
        });
    }
}
