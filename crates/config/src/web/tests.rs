use super::*;

const GOOD: &str = r#"
listen = ["127.0.0.1:0"]
root = "/srv/www"
threads = 1

[cache]
revalidate = "250ms"

[[cache_control]]
match = "/assets/"
value = "public, max-age=3600"

[[cache_control]]
match = "/**/*.html"
value = "no-cache"

[[proxy]]
servers = ["127.0.0.1:9001", "app2:9002"]
health_check = { kind = "http", path = "/health", interval = "500ms" }
"#;

#[test]
fn parses_a_good_config_with_defaults() {
    let c: WebConfig = crate::from_str(GOOD, "web.toml").unwrap();
    assert_eq!(c.index, ["index.html"]);
    assert_eq!(c.cache.revalidate, Duration::from_millis(250));
    assert_eq!(c.proxy[0].prefix, "/api/");
    assert!(c.access_log && c.precompressed && !c.dotfiles);
    assert_eq!(c.limits.max_body_bytes, 1024 * 1024);
    assert_eq!(c.timeouts.keepalive, Duration::from_secs(75));
    assert!(!c.cache_control[0].is_glob() && c.cache_control[1].is_glob());
    assert_eq!(crate::Role::detect(GOOD), Some(crate::Role::Web));
}

#[test]
fn proxy_route_becomes_a_backend() {
    let c: WebConfig = crate::from_str(GOOD, "web.toml").unwrap();
    let b = c.proxy[0].to_backend("api", None);
    assert_eq!(b.servers.len(), 2);
    assert_eq!(b.servers[1].name, "api-1");
    assert_eq!(b.servers[1].address, "app2:9002");
    assert_eq!(b.health_check.unwrap().interval, Duration::from_millis(500));
    let mut v = Validator::default();
    c.proxy[0].to_backend("api", None).validate(&mut v);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn names_the_key_and_line_of_a_bad_server() {
    let bad = GOOD.replace("\"app2:9002\"", "\"not a server\"");
    let err = crate::from_str::<WebConfig>(&bad, "web.toml").unwrap_err();
    assert_eq!(err.issues.len(), 1, "{err}");
    assert_eq!(err.issues[0].key, "proxy[0].servers[1]");
    assert_eq!(err.issues[0].line, Some(18), "{err}");
    assert!(
        err.to_string().starts_with("web.toml:18: proxy[0].servers[1]: `not a server` is not a valid host:port"),
        "{err}"
    );
}

#[test]
fn reports_every_problem_at_once() {
    let bad = GOOD
        .replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.1:80\", \"127.0.0.1:80\"]")
        .replace("match = \"/assets/\"", "match = \"assets\"")
        .replace("servers = [", "prefix = \"api\"\nservers = [");
    let err = crate::from_str::<WebConfig>(&bad, "web.toml").unwrap_err();
    let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["listen[1]", "cache_control[0].match", "proxy[0].prefix"], "{err}");
}

#[test]
fn a_listen_address_is_an_ip_literal() {
    let c: WebConfig = crate::from_str(GOOD, "web.toml").unwrap();
    assert_eq!(c.listen, ["127.0.0.1:0".parse::<SocketAddr>().unwrap()]);
    let bad = GOOD.replace("listen = [\"127.0.0.1:0\"]", "listen = [\"127.0.0.1:0\", \"localhost:80\"]");
    let err = crate::from_str::<WebConfig>(&bad, "web.toml").unwrap_err().to_string();
    assert!(err.starts_with("web.toml:2: listen[1]: `localhost:80` is not an ip:port listen address"), "{err}");
}

#[test]
fn rejects_unknown_keys_and_bad_limits() {
    let err = crate::from_str::<WebConfig>(&GOOD.replace("threads = 1", "thread = 1"), "web.toml").unwrap_err();
    assert!(err.to_string().contains("unknown field `thread`"), "{err}");
    let bad = format!("{GOOD}\n[limits]\nmax_header_bytes = 10\n[timeouts]\nheader = \"0s\"\n");
    let err = crate::from_str::<WebConfig>(&bad, "web.toml").unwrap_err();
    let keys: Vec<_> = err.issues.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["limits.max_header_bytes", "timeouts.header"], "{err}");
}

#[test]
fn requires_listen_and_root() {
    let err = crate::from_str::<WebConfig>("threads = 1\n", "web.toml").unwrap_err();
    assert!(err.to_string().contains("missing field `listen`"), "{err}");
    let err = crate::from_str::<WebConfig>("listen = []\nroot = \"/x\"\n", "web.toml").unwrap_err();
    assert_eq!(err.issues[0].key, "listen", "{err}");
}
