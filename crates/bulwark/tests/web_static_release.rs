//! The web tier in front of a user's program: the site's static files come
//! from the program's directory under their own path (`static_prefixes`),
//! with ETags, conditional requests and precompressed variants, while
//! every other path (the program's code included) goes to the app servers.
use bulwark_testkit::config::WebConfig;
use bulwark_testkit::{get, raw_request, Backend, Process};
use std::io::Write;

/// A web server for a release directory `root`: `/static/` from disk,
/// everything else from `app`.
fn release_web(root: &std::path::Path, app: std::net::SocketAddr) -> Process {
    let config = WebConfig::new(root).set("static_prefixes", r#"["/static/"]"#).proxy("/", &[app]);
    Process::start("web", &config.to_toml())
}

#[test]
fn static_files_of_the_release_are_served_and_the_rest_is_proxied() {
    let release = tempfile::tempdir().unwrap();
    std::fs::create_dir(release.path().join("static")).unwrap();
    let css = "body { color: #333; }\n".repeat(50);
    std::fs::write(release.path().join("static/style.css"), &css).unwrap();
    let gz = flate2_free_gzip(css.as_bytes());
    std::fs::File::create(release.path().join("static/style.css.gz")).unwrap().write_all(&gz).unwrap();
    std::fs::write(release.path().join("guestbook.py"), "SECRET_SOURCE = 1\n").unwrap();
    let app = Backend::start("app1");
    let web = release_web(release.path(), app.addr);
    let addr = web.addr("http");

    // The static file, from disk, with a validator and a type.
    let r = get(addr, "/static/style.css").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), css);
    assert!(r.header("content-type").unwrap().starts_with("text/css"), "{:?}", r.headers);
    let etag = r.header("etag").expect("an ETag").to_string();
    let again = raw_request(
        addr,
        format!("GET /static/style.css HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(again.status, 304);
    // The precompressed variant for a client that accepts it.
    let zipped = raw_request(
        addr,
        b"GET /static/style.css HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!((zipped.status, zipped.header("content-encoding")), (200, Some("gzip")));
    assert_eq!(zipped.body, gz);

    // Everything else is the program's: the page, and its code's path.
    for path in ["/", "/guestbook.py", "/api/messages", "/staticky"] {
        let r = get(addr, path).unwrap();
        assert_eq!((r.status, r.text()), (200, "app1".to_string()), "{path}");
    }
    // A static path cannot climb out of its directory.
    for path in ["/static/../guestbook.py", "/static/%2e%2e/guestbook.py", "/static/..%2fguestbook.py"] {
        let r = raw_request(addr, format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
            .unwrap();
        assert!(matches!(r.status, 403 | 404), "{path}: {} {}", r.status, r.text());
        assert!(!r.text().contains("SECRET_SOURCE"), "{path}");
    }
    assert_eq!(get(addr, "/static/missing.css").unwrap().status, 404);
}

/// The web root is the `current` link of an app's releases: when a deploy
/// switches it, the new release's static files are served (and those only
/// the old one had are gone), without restarting the web role.
#[test]
fn static_files_follow_the_release_link() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    for (d, css) in [(&v1, "one"), (&v2, "two")] {
        std::fs::create_dir_all(d.join("static")).unwrap();
        std::fs::write(d.join("static/site.css"), css).unwrap();
    }
    std::fs::write(v2.join("static/new.css"), "new in v2").unwrap();
    let current = dir.path().join("current");
    std::os::unix::fs::symlink(&v1, &current).unwrap();
    let app = Backend::start("app1");
    let web = release_web(&current, app.addr);
    let addr = web.addr("http");
    let body = |path: &str| {
        let r = get(addr, path).unwrap();
        (r.status, r.text())
    };
    assert_eq!(body("/static/site.css"), (200, "one".to_string()));
    assert_eq!(body("/static/new.css").0, 404);

    // Switched as `bulwark deploy` does: a new link renamed over `current`.
    std::os::unix::fs::symlink(&v2, dir.path().join(".current.new")).unwrap();
    std::fs::rename(dir.path().join(".current.new"), &current).unwrap();
    bulwark_testkit::wait_until("the new release's style sheet", || body("/static/site.css") == (200, "two".into()));
    assert_eq!(body("/static/new.css"), (200, "new in v2".to_string()));
    // And back.
    std::os::unix::fs::symlink(&v1, dir.path().join(".current.new")).unwrap();
    std::fs::rename(dir.path().join(".current.new"), &current).unwrap();
    bulwark_testkit::wait_until("the old release's style sheet", || body("/static/site.css") == (200, "one".into()));
    // Each cached file is checked again within `cache.revalidate` of the
    // switch: the one only the new release had is then gone.
    bulwark_testkit::wait_until("the new release's file gone", || body("/static/new.css").0 == 404);
}

#[test]
fn a_static_prefix_must_be_plain() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["static/", "/static", "/../x/", "/a//b/", "/"] {
        let path = dir.path().join("web.toml");
        std::fs::write(
            &path,
            format!("role = \"web\"\nlisten = [\"127.0.0.1:0\"]\nroot = \"/srv\"\nstatic_prefixes = [\"{bad}\"]\n"),
        )
        .unwrap();
        let out = std::process::Command::new(bulwark_testkit::bulwark_bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad}: {err}");
        assert!(err.contains("static_prefixes[0]"), "{bad}: {err}");
    }
}

/// A gzip member with stored (uncompressed) deflate blocks: valid gzip that
/// any client decodes, made without a compression library.
fn flate2_free_gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(65535).peekable();
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
