//! Compression of proxied (dynamic) responses, on the web tier
//! (`[compression]`, nginx's `gzip on` plus Brotli) and on the lb's http
//! frontends (`[frontend.compression]`): the same rules for both. Static
//! files have their precompressed siblings instead ([`crate::encoding`]).
//!
//! A response is compressed when it is a 200–203 answer to a request other
//! than HEAD, of a listed media type, not known to be shorter than
//! `min_bytes`, without a `Content-Encoding` of its own, a
//! `Content-Range`, or `Cache-Control: no-transform`; and the client
//! accepts `br` or `gzip` (q-values weigh, Brotli wins a tie). Such a
//! response always gets `Vary: Accept-Encoding`, compressed or not. A
//! compressed one loses its `Content-Length` (it is streamed) and
//! `Accept-Ranges`, and a strong `ETag` becomes weak (the bytes differ
//! from the identity representation's).
//!
//! The body is compressed as it streams: every chunk from the server is
//! written to the encoder and flushed, so a slow page still arrives piece
//! by piece. A Brotli encoder holds megabytes until its body ends (its
//! window and hash table: some 11 MB at quality 4 after a 1.5 MB page), so
//! one compressor runs at most [`MAX_ENCODERS`] at once; past that,
//! answers go as they are (still with `Vary`).
use crate::encoding::{self, Coding};
use bulwark_config::compression::Compression;
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Responses one [`Compressor`] compresses at once; past it, answers go
/// as they are. A Brotli encoder holds megabytes (its window and hash
/// table) until its body ends, so a client keeping many slow streams of
/// a large page open must not make the process hold one per stream.
pub const MAX_ENCODERS: usize = 128;

/// The compression settings, ready to apply.
#[derive(Debug, Clone)]
pub struct Compressor {
    types: Vec<String>,
    min_bytes: u64,
    gzip_level: u32,
    brotli_quality: u32,
    /// Encoders alive now (at most [`MAX_ENCODERS`]).
    live: Arc<AtomicUsize>,
}

impl Compressor {
    /// `None` when compression is off (nothing is done per response).
    pub fn new(cfg: &Compression) -> Option<Compressor> {
        cfg.enabled.then(|| Compressor {
            types: cfg.types.iter().map(|t| t.to_ascii_lowercase()).collect(),
            min_bytes: cfg.min_bytes,
            gzip_level: cfg.gzip_level,
            brotli_quality: cfg.brotli_quality,
            live: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn type_listed(&self, content_type: &[u8]) -> bool {
        let Ok(ct) = std::str::from_utf8(content_type) else { return false };
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        self.types.iter().any(|t| if t.ends_with('/') { media.starts_with(t.as_str()) } else { media == *t })
    }

    /// Whether the response may be compressed at all (whatever the client
    /// accepts).
    fn eligible(&self, method: &Method, h: &HeaderMap, status: StatusCode, len: Option<u64>) -> bool {
        method != Method::HEAD
            && (200..=203).contains(&status.as_u16())
            && !h.contains_key(CONTENT_RANGE)
            && h.get(CONTENT_ENCODING).is_none_or(|e| e.as_bytes().eq_ignore_ascii_case(b"identity"))
            && !h
                .get_all(CACHE_CONTROL)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-transform"))))
            && h.get(CONTENT_TYPE).is_some_and(|ct| self.type_listed(ct.as_bytes()))
            && len.is_none_or(|l| l >= self.min_bytes)
    }

    /// Compress `resp` for a request with `method` and `accept`
    /// (`Accept-Encoding`) when the rules allow; `wrap` turns the
    /// compressed body into the caller's body type.
    pub fn apply<B>(
        &self,
        method: &Method,
        accept: Option<&HeaderValue>,
        resp: Response<B>,
        wrap: impl FnOnce(CompressedBody<B>) -> B,
    ) -> Response<B>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let (mut parts, body) = resp.into_parts();
        let len = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .or_else(|| body.size_hint().exact());
        if !self.eligible(method, &parts.headers, parts.status, len) {
            return Response::from_parts(parts, body);
        }
        add_vary(&mut parts.headers);
        let coding = encoding::negotiate(accept.map(HeaderValue::as_bytes), true, true);
        // Identity, or as many encoders alive as allowed: as it is.
        let slot = match coding {
            Coding::Identity => None,
            _ => EncoderSlot::take(&self.live),
        };
        let Some(slot) = slot else { return Response::from_parts(parts, body) };
        let encoder = match coding {
            Coding::Identity => return Response::from_parts(parts, body),
            Coding::Gzip => {
                Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(self.gzip_level)))
            }
            Coding::Brotli => {
                Encoder::Brotli(Box::new(brotli::CompressorWriter::new(Vec::new(), 4096, self.brotli_quality, 22)))
            }
        };
        let h = &mut parts.headers;
        h.remove(CONTENT_LENGTH);
        h.remove(ACCEPT_RANGES);
        h.insert(CONTENT_ENCODING, HeaderValue::from_static(coding.token().unwrap_or("identity")));
        if let Some(weak) = h.get(ETAG).and_then(weaken) {
            h.insert(ETAG, weak);
        }
        Response::from_parts(parts, wrap(CompressedBody::new(body, encoder, slot)))
    }
}

/// One of a [`Compressor`]'s [`MAX_ENCODERS`] places, given back when
/// dropped.
struct EncoderSlot(Arc<AtomicUsize>);

impl EncoderSlot {
    fn take(live: &Arc<AtomicUsize>) -> Option<EncoderSlot> {
        live.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < MAX_ENCODERS).then_some(n + 1))
            .ok()
            .map(|_| EncoderSlot(live.clone()))
    }
}

impl Drop for EncoderSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `Vary: Accept-Encoding`, unless already listed (or `*`).
fn add_vary(h: &mut HeaderMap) {
    let listed = h.get_all(VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding")))
    });
    if !listed {
        h.append(VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// `"x"` → `W/"x"`; a weak tag stays as it is (None).
fn weaken(etag: &HeaderValue) -> Option<HeaderValue> {
    let b = etag.as_bytes();
    if b.starts_with(b"W/") {
        return None;
    }
    HeaderValue::from_bytes(&[b"W/", b].concat()).ok()
}

/// A ready request's `Accept-Encoding`, for [`Compressor::apply`].
pub fn accept_encoding(h: &HeaderMap) -> Option<HeaderValue> {
    h.get(ACCEPT_ENCODING).cloned()
}

/// The gzip or Brotli encoder of one response.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    /// Compress `data` and return what the encoder has output so far.
    fn push(&mut self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(std::mem::take(e.get_mut()))
            }
            Encoder::Brotli(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(std::mem::take(e.get_mut()))
            }
        }
    }

    /// End the stream: the encoder's last bytes.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
        }
    }
}

/// A body compressed as it streams. Writing to an in-memory encoder does
/// not fail; if it ever did, the body would end there (logged), since the
/// inner body's error type cannot carry it.
pub struct CompressedBody<B> {
    inner: B,
    encoder: Option<Encoder>,
    /// Held while `encoder` is.
    slot: Option<EncoderSlot>,
    /// Trailers held back until the encoder's last bytes are out.
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B> CompressedBody<B> {
    fn new(inner: B, encoder: Encoder, slot: EncoderSlot) -> Self {
        CompressedBody { inner, encoder: Some(encoder), slot: Some(slot), trailers: None, done: false }
    }

    /// The encoder's last bytes (empty once finished); its place is free.
    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        let tail = self.encoder.take().map(Encoder::finish).transpose();
        self.slot = None;
        Ok(tail?.unwrap_or_default())
    }

    /// `out` as the next frame; an encoder error ends the body.
    fn frame(&mut self, out: std::io::Result<Vec<u8>>) -> Option<Frame<Bytes>> {
        match out {
            Ok(out) if out.is_empty() => None,
            Ok(out) => Some(Frame::data(Bytes::from(out))),
            Err(e) => {
                tracing::warn!(error = %e, "compression failed; the response ends here");
                self.done = true;
                self.trailers = None;
                self.encoder = None;
                self.slot = None;
                None
            }
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CompressedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(t) = this.trailers.take() {
                this.done = true;
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let Some(encoder) = this.encoder.as_mut() else { continue };
                        let out = encoder.push(&data);
                        if let Some(f) = this.frame(out) {
                            return Poll::Ready(Some(Ok(f)));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body: the last compressed bytes
                        // first, then the trailers.
                        if let Ok(t) = frame.into_trailers() {
                            this.trailers = Some(t);
                            let tail = this.finish();
                            if let Some(f) = this.frame(tail) {
                                return Poll::Ready(Some(Ok(f)));
                            }
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    let tail = this.finish();
                    return Poll::Ready(this.frame(tail).map(Ok));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Read;

    fn compressor() -> Compressor {
        Compressor::new(&Compression { enabled: true, ..Compression::default() }).unwrap()
    }

    /// A body that is not boxed, as on the lb.
    enum TestBody {
        Plain(http_body_util::Full<Bytes>),
        Compressed(Box<CompressedBody<TestBody>>),
    }

    impl Body for TestBody {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.get_mut() {
                TestBody::Plain(b) => Pin::new(b).poll_frame(cx),
                TestBody::Compressed(b) => Pin::new(&mut **b).poll_frame(cx),
            }
        }
        fn size_hint(&self) -> SizeHint {
            match self {
                TestBody::Plain(b) => b.size_hint(),
                TestBody::Compressed(b) => b.size_hint(),
            }
        }
    }

    fn apply(method: &Method, accept: &'static str, resp: Response<TestBody>) -> Response<TestBody> {
        compressor().apply(method, Some(&HeaderValue::from_static(accept)), resp, |c| TestBody::Compressed(Box::new(c)))
    }

    fn page(headers: &[(&str, &str)], body: &str) -> Response<TestBody> {
        let mut r = Response::new(TestBody::Plain(http_body_util::Full::new(Bytes::from(body.to_string()))));
        for (k, v) in headers {
            r.headers_mut()
                .append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        r
    }

    fn html() -> String {
        "<p>hello, compressed world</p>\n".repeat(100)
    }

    async fn run(accept: &'static str, resp: Response<TestBody>) -> (HeaderMap, Vec<u8>) {
        let r = apply(&Method::GET, accept, resp);
        let (parts, body) = r.into_parts();
        (parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn brotli_then_gzip_by_accept_encoding_with_vary_and_a_weak_etag() {
        let headers = [("content-type", "text/html; charset=utf-8"), ("etag", "\"v1\""), ("accept-ranges", "bytes")];
        let (h, body) = run("gzip, br", page(&headers, &html())).await;
        assert_eq!(h[CONTENT_ENCODING], "br");
        assert_eq!(h[VARY], "Accept-Encoding");
        assert_eq!(h[ETAG], "W/\"v1\"");
        assert!(!h.contains_key(CONTENT_LENGTH) && !h.contains_key(ACCEPT_RANGES));
        let mut plain = String::new();
        brotli::Decompressor::new(&body[..], 4096).read_to_string(&mut plain).unwrap();
        assert_eq!(plain, html());
        assert!(body.len() < html().len() / 4, "{} bytes", body.len());

        let (h, body) = run("br;q=0.5, gzip", page(&headers, &html())).await;
        assert_eq!(h[CONTENT_ENCODING], "gzip");
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut plain).unwrap();
        assert_eq!(plain, html());
    }

    #[tokio::test]
    async fn what_is_never_compressed() {
        let html = html();
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);
        let cases: Vec<Case> = vec![
            ("an image", vec![("content-type", "image/png")], html.clone()),
            ("too small", vec![("content-type", "text/html")], "<p>hi</p>".into()),
            ("already encoded", vec![("content-type", "text/html"), ("content-encoding", "gzip")], html.clone()),
            (
                "no-transform",
                vec![("content-type", "text/html"), ("cache-control", "public, no-transform")],
                html.clone(),
            ),
            ("a range", vec![("content-type", "text/html"), ("content-range", "bytes 0-9/100")], html.clone()),
            ("no type", vec![], html.clone()),
        ];
        for (why, headers, body) in cases {
            let (h, out) = run("br, gzip", page(&headers, &body)).await;
            assert!(
                !h.contains_key(CONTENT_ENCODING) || h[CONTENT_ENCODING] == "gzip" && why == "already encoded",
                "{why}"
            );
            assert_eq!(out, body.as_bytes(), "{why}");
        }
        // Identity accepted only: untouched, but it varies by Accept-Encoding.
        let (h, out) = run("identity", page(&[("content-type", "application/json")], &html)).await;
        assert!(!h.contains_key(CONTENT_ENCODING));
        assert_eq!(h[VARY], "Accept-Encoding");
        assert_eq!(out, html.as_bytes());
        // HEAD and a 204 are left alone.
        let r = apply(&Method::HEAD, "br", page(&[("content-type", "text/html")], &html));
        assert!(!r.headers().contains_key(CONTENT_ENCODING));
        let mut no_content = page(&[("content-type", "text/html")], &html);
        *no_content.status_mut() = StatusCode::NO_CONTENT;
        let r = apply(&Method::GET, "br", no_content);
        assert!(!r.headers().contains_key(CONTENT_ENCODING));
    }

    #[tokio::test]
    async fn encoders_at_once_are_bounded() {
        let c = compressor();
        let headers = [("content-type", "text/html")];
        let compress = |c: &Compressor| {
            c.apply(&Method::GET, Some(&HeaderValue::from_static("br")), page(&headers, &html()), |b| {
                TestBody::Compressed(Box::new(b))
            })
        };
        let held: Vec<_> = (0..MAX_ENCODERS).map(|_| compress(&c)).collect();
        assert!(held.iter().all(|r| r.headers()[CONTENT_ENCODING] == "br"));
        let over = compress(&c);
        assert!(!over.headers().contains_key(CONTENT_ENCODING), "past the bound, as it is");
        assert_eq!(over.headers()[VARY], "Accept-Encoding");
        let plain = over.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(plain, html().as_bytes());
        // A body read to its end gives its place back.
        let mut held = held.into_iter();
        held.next().unwrap().into_body().collect().await.unwrap();
        let again = compress(&c);
        assert_eq!(again.headers()[CONTENT_ENCODING], "br");
        // And one dropped half-way, too.
        drop(held.next());
        let once_more = compress(&c);
        assert_eq!(once_more.headers()[CONTENT_ENCODING], "br");
        assert!(!compress(&c).headers().contains_key(CONTENT_ENCODING));
    }

    #[test]
    fn vary_is_not_repeated_and_types_match_by_prefix_or_whole() {
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Cookie, accept-encoding"));
        add_vary(&mut h);
        assert_eq!(h.get_all(VARY).iter().count(), 1);
        let c = compressor();
        assert!(c.type_listed(b"text/css"));
        assert!(c.type_listed(b"Application/JSON; charset=utf-8"));
        assert!(!c.type_listed(b"application/json-seq"));
        assert!(!c.type_listed(b"image/png"));
        assert!(Compressor::new(&Compression::default()).is_none(), "off by default");
    }
}
