//! The app role's front before the user's program under mutual TLS: only
//! a client with a certificate of the cluster CA (the web tier) gets an
//! answer; and a program run as another user (`user = "nobody"`, the role
//! running as root) runs with that uid and can read its database
//! credentials: the secret and the client certificate, key and CA, passed
//! as file paths.
use bulwark_testkit::{wait_until, Process};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const WEB_APP: &str = "web-app-secret-0123456789";
const APP_DB: &str = "app-db-secret-0123456789";

/// curl over HTTPS with `args`: (status, body); 0 when no answer came.
fn curl(addr: SocketAddr, path: &str, args: &[String]) -> (u16, String) {
    let cluster = format!("X-Bulwark-Cluster: {WEB_APP}");
    let url = format!("https://{addr}{path}");
    let mut all = vec!["-H", cluster.as_str()];
    all.extend(args.iter().map(String::as_str));
    all.push(&url);
    let answer = bulwark_testkit::curl(&all);
    (answer.status, answer.body)
}

fn cert_args(c: &bulwark_cluster::pki::RoleCertificate, ca: &Path) -> Vec<String> {
    [
        "--cacert",
        &ca.display().to_string(),
        "--cert",
        &c.cert.display().to_string(),
        "--key",
        &c.key.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn only_the_web_tier_reaches_the_program_and_it_runs_as_its_user() {
    assert!(nix::unistd::geteuid().is_root(), "this test switches users: run it as root");
    let pki = tempfile::tempdir().unwrap();
    let ca = bulwark_cluster::pki::ClusterCa::ensure(pki.path(), "test").unwrap();
    let local = "127.0.0.1".parse().unwrap();
    let app = ca.ensure_role("app1", local).unwrap();
    let web = ca.ensure_role("web1", local).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let stranger =
        bulwark_cluster::pki::ClusterCa::ensure(other_dir.path(), "other").unwrap().ensure_role("web9", local).unwrap();

    // The program and its directory: readable by nobody (a python3 under
    // /root, as pyenv puts it, is not).
    let site = tempfile::tempdir().unwrap();
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(site.path().join("echo.py"), include_str!("app_program/echo.py")).unwrap();
    std::fs::set_permissions(site.path().join("echo.py"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = format!(
        "name = \"app1\"\nlisten = \"127.0.0.1:0\"\ndb_nodes = [\"127.0.0.1:1\"]\nsecret = \"{WEB_APP}\"\n\
         db_secret = \"{APP_DB}\"\nmutual_tls = {{ cert = \"{}\", key = \"{}\", ca = \"{}\" }}\n[program]\n\
         exec = [\"/usr/bin/python3\", \"echo.py\"]\nworkdir = \"{}\"\nuser = \"nobody\"\n",
        app.cert.display(),
        app.key.display(),
        ca.cert_path().display(),
        site.path().display()
    );
    let role = Process::start("app", &config);
    let addr = role.addr("http");
    let web_args = cert_args(&web, &ca.cert_path());
    wait_until("the program is healthy", || curl(addr, "/health", &web_args).0 == 200);

    // The web tier's certificate: through to the program.
    let (code, body) = curl(addr, "/hello", &web_args);
    assert_eq!(code, 200, "{body}\n{}", role.logs());
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(seen["uid"].as_u64(), Some(nobody.uid.as_raw() as u64), "{seen}");
    assert_eq!(seen["db_secret"], APP_DB, "{seen}");
    assert_eq!(seen["db_tls_readable"], serde_json::json!([true, true, true]), "{seen}");
    let env = &seen["env"];
    for (var, original) in [("BULWARK_DB_CERT", &app.cert), ("BULWARK_DB_KEY", &app.key)] {
        let given = env[var].as_str().unwrap_or_else(|| panic!("no {var}: {seen}"));
        // A copy for the program's user, with the same bytes; paths only.
        assert_ne!(Path::new(given), original.as_path());
        assert_eq!(std::fs::read(given).unwrap(), std::fs::read(original).unwrap());
    }
    assert!(!env.to_string().contains("PRIVATE KEY"), "a key in the environment: {env}");

    // No certificate, or one of another CA: no answer at all.
    let no_cert = vec!["--cacert".to_string(), ca.cert_path().display().to_string()];
    assert_eq!(curl(addr, "/hello", &no_cert).0, 0);
    let stranger_args = cert_args(&stranger, &ca.cert_path());
    assert_eq!(curl(addr, "/hello", &stranger_args).0, 0);
    assert_eq!(curl(addr, "/health", &stranger_args).0, 0);
    // And plain HTTP gets nothing either.
    assert!(bulwark_testkit::get(addr, "/hello").is_err());
}
