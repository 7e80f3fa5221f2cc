//! Sticky sessions on a real `bulwark lb` with `sticky = "cookie"`: a
//! client with the cookie stays on one server, moves when that server is
//! stopped (with a new cookie), and a forged or altered cookie is ignored.
use bulwark_testkit::config::{BackendConfig, Balance, FrontendConfig, LbConfig};
use bulwark_testkit::{request, Backend, HttpResponse, Process};
use std::collections::BTreeMap;
use std::net::SocketAddr;

fn lb_config(a: SocketAddr, b: SocketAddr) -> String {
    let app = BackendConfig::new("app")
        .balance(Balance::Roundrobin)
        .sticky_cookie("srv", "a-sticky-secret-of-some-length")
        .server("a", a)
        .server("b", b);
    LbConfig::new().threads(2).frontend(FrontendConfig::http("www", "app")).backend(app).to_toml()
}

fn get(www: SocketAddr, cookie: Option<&str>) -> HttpResponse {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
    let r = request(www, "GET", "/echo", &headers, b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

/// The server that answered (the first line the backend echoes).
fn server(r: &HttpResponse) -> String {
    r.text().lines().next().unwrap().to_string()
}

/// `srv=<value>` from the response's Set-Cookie.
fn cookie_of(r: &HttpResponse) -> Option<String> {
    let set = r.header("set-cookie")?;
    assert!(set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
    Some(set.split(';').next().unwrap().to_string())
}

fn spread(www: SocketAddr, cookie: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(server(&get(www, Some(cookie)))).or_default() += 1;
    }
    seen
}

#[test]
fn a_cookie_pins_a_client_and_moves_when_its_server_stops() {
    let mut a = Backend::start("a");
    let mut b = Backend::start("b");
    let lb = Process::start("lb", &lb_config(a.addr, b.addr));
    let www = lb.addr("www");

    let first = get(www, None);
    let cookie = cookie_of(&first).expect("a first answer sets the cookie");
    let pinned = server(&first);
    assert!(cookie.starts_with(&format!("srv={pinned}.")), "{cookie}");
    assert!(!first.text().contains("srv="), "the server never sees the cookie");

    // 100 requests with the cookie: one server, no new cookie.
    let with_other_cookies = format!("theme=dark; {cookie}; lang=en");
    let mut hits = BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let r = get(www, Some(&with_other_cookies));
        assert_eq!(r.header("set-cookie"), None);
        assert!(r.text().contains("cookie: theme=dark; lang=en"), "other cookies pass: {}", r.text());
        *hits.entry(server(&r)).or_default() += 1;
    }
    assert_eq!(hits, BTreeMap::from([(pinned.clone(), 100)]));

    // The pinned server stops: the client moves, with a new cookie.
    let other = if pinned == "a" {
        a.stop();
        "b"
    } else {
        b.stop();
        "a"
    };
    let moved = get(www, Some(&cookie));
    assert_eq!(server(&moved), other);
    let new_cookie = cookie_of(&moved).expect("re-picked: a new cookie");
    assert!(new_cookie.starts_with(&format!("srv={other}.")), "{new_cookie}");
    assert_eq!(spread(www, &new_cookie, 20), BTreeMap::from([(other.to_string(), 20)]));
}

#[test]
fn a_forged_or_altered_cookie_is_ignored() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let lb = Process::start("lb", &lb_config(a.addr, b.addr));
    let www = lb.addr("www");
    let genuine = cookie_of(&get(www, None)).unwrap();
    let (name_and_server, tag) = genuine.rsplit_once('.').unwrap();
    let other = if name_and_server.ends_with('a') { "srv=b" } else { "srv=a" };
    let mut flipped = tag.to_string();
    let last = if flipped.ends_with('A') { 'B' } else { 'A' };
    flipped.pop();
    flipped.push(last);
    for forged in [
        format!("{other}.{tag}"),               // another server with this tag
        format!("{name_and_server}.{flipped}"), // altered tag
        format!("{name_and_server}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), // made up
        format!("srv={}", a.addr),              // an address
        name_and_server.to_string(),            // no tag
    ] {
        // Ignored: the requests are balanced over both servers, and each
        // answer offers a genuine cookie instead.
        let mut seen = BTreeMap::<String, usize>::new();
        for _ in 0..10 {
            let r = get(www, Some(&forged));
            let offered = cookie_of(&r).unwrap_or_else(|| panic!("{forged}: no new cookie"));
            assert!(offered.starts_with(&format!("srv={}.", server(&r))), "{offered}");
            *seen.entry(server(&r)).or_default() += 1;
        }
        assert_eq!(seen.len(), 2, "{forged}: {seen:?}");
    }
}
