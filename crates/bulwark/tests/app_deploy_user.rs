//! `bulwark deploy` of a program that runs as another user (`user =
//! "nobody"`, `up` running as root), under continuous GETs and keyed POSTs
//! through the lb: the releases are kept beside the data directory (which
//! stays 0700), readable by the program's group and not writable by it; a
//! new release and the rollback roll through both app servers with no
//! failed request, the program runs as `nobody` from its release, and the
//! web tier serves the static files of the release each app runs.
//!
//! Needs Debian's gunicorn (`scripts/install-test-deps.sh`).
mod python_site;

use bulwark_testkit::{bulwark_bin, wait_until, Process};
use python_site::{copy_dir, example_dir, Load, Site};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(data: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bulwark_bin()).arg("deploy").args(args).arg("--data-dir").arg(data).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn release(work: &Path, name: &str, version: &str) -> PathBuf {
    let dir = work.join(name);
    copy_dir(&example_dir(), &dir);
    std::fs::write(dir.join("VERSION"), format!("{version}\n")).unwrap();
    dir
}

/// The versions answered through the lb until both app servers answered.
fn versions(site: &Site, jar: &Path) -> std::collections::BTreeMap<String, String> {
    let mut seen = std::collections::BTreeMap::new();
    wait_until("answers from both app servers", || {
        let (code, body) = site.get(jar, "/api/messages?limit=1");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen.insert(v["served_by"].as_str().unwrap().to_string(), v["version"].as_str().unwrap().to_string());
        seen.len() == 2
    });
    seen
}

/// (uid, working directory) of every process whose working directory is
/// under `base`: the programs the app roles started.
fn programs_under(base: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) else { continue };
        if !cwd.starts_with(base) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(e.path()) else { continue };
        out.push((meta.uid(), cwd));
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o7777
}

#[test]
fn a_program_run_as_another_user_is_deployed_and_rolled_back_with_its_static_files() {
    assert!(nix::unistd::geteuid().is_root(), "this test runs the program as nobody: run it as root");
    assert!(
        Path::new("/usr/bin/gunicorn").exists(),
        "Debian's gunicorn is not installed: run scripts/install-test-deps.sh"
    );
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a user nobody");
    // Everything under a directory nobody can traverse: the site's files
    // are the operator's, readable by all.
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = base.path().join("work");
    let v1 = release(&work, "site-v1", "1");
    let v2 = release(&work, "site-v2", "2");
    let css_v1 = std::fs::read_to_string(v1.join("static/style.css")).unwrap();
    let css_v2 = format!("{css_v1}/* version 2 */\n");
    std::fs::write(v2.join("static/style.css"), &css_v2).unwrap();
    std::fs::write(v2.join("static/v2.css"), "p { color: green; }\n").unwrap();
    let example = std::fs::read_to_string(example_dir().join("topology.toml")).unwrap();
    let topology = example.replace("workdir = \".\"", "workdir = \"site-v1\"\nuser = \"nobody\"");
    assert!(topology.contains("user = \"nobody\""), "{topology}");
    let topo = work.join("topology.toml");
    std::fs::write(&topo, topology).unwrap();

    let data = base.path().join("data");
    let releases = base.path().join("data-releases");
    let mut up = Process::up(&topo, &data);
    let site = Site::new(up.addr("lb1.https"), &data);
    let jar = base.path().join("cookies.txt");

    let (code, body) = site.post(&jar, "before-deploy", "ann", "posted by nobody's program");
    assert_eq!(code, 201, "{body}\n{}", up.logs());
    assert!(versions(&site, &jar).values().all(|v| v == "1"));
    assert_eq!(site.get(&jar, "/static/style.css"), (200, css_v1.clone()));
    assert_eq!(site.get(&jar, "/static/v2.css").0, 404);
    let running = programs_under(base.path());
    assert!(
        !running.is_empty() && running.iter().all(|(uid, cwd)| *uid == nobody.uid.as_raw() && cwd.starts_with(&v1)),
        "{running:?}"
    );

    let load = Load::start(&site, base.path());
    load.wait_requests(10);

    // The new release: each program restarts as nobody in its copy, and the
    // new static files are served.
    let (ok, out) = deploy(&data, &["--release", v2.to_str().unwrap()]);
    assert!(ok, "{out}\n{}", up.logs());
    assert!(out.contains("every app server runs release site-v2-"), "{out}");
    load.wait_requests(10);
    assert!(versions(&site, &jar).values().all(|v| v == "2"));
    wait_until("the new release's style sheet", || site.get(&jar, "/static/style.css") == (200, css_v2.clone()));
    assert_eq!(site.get(&jar, "/static/v2.css"), (200, "p { color: green; }\n".to_string()));
    let running = programs_under(base.path());
    assert!(
        !running.is_empty()
            && running.iter().all(|(uid, cwd)| *uid == nobody.uid.as_raw()
                && (cwd.starts_with(releases.join("app1/releases"))
                    || cwd.starts_with(releases.join("app2/releases")))),
        "{running:?}"
    );

    // The releases: beside the data directory, which stays the role's only;
    // the program's group reads them, nobody writes them.
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&releases), 0o755);
    for app in ["app1", "app2"] {
        let current = std::fs::read_link(releases.join(app).join("current")).unwrap();
        assert!(current.starts_with(releases.join(app).join("releases")), "{}", current.display());
        for p in [releases.join(app), current.clone(), current.join("static"), current.join("guestbook.py")] {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, nobody.gid.as_raw()), "{}", p.display());
            assert_eq!(m.mode() & 0o027, 0, "{}: mode {:o}", p.display(), m.mode());
        }
    }

    // Back to the release of before, the same way, static files included.
    let (ok, out) = deploy(&data, &["--rollback"]);
    assert!(ok, "{out}\n{}", up.logs());
    assert!(out.contains("every app server runs release initial"), "{out}");
    load.wait_requests(10);
    assert!(versions(&site, &jar).values().all(|v| v == "1"));
    wait_until("the old release's style sheet", || site.get(&jar, "/static/style.css") == (200, css_v1.clone()));
    wait_until("the new release's asset gone", || site.get(&jar, "/static/v2.css").0 == 404);

    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:#?}\n{}", up.logs());
    let exit = up.terminate();
    assert!(exit.success(), "{exit:?}\n{}", up.logs());
}

/// `bulwark check` names a release root the program's user cannot reach
/// (no release could run there), and the program's path and the user when
/// that user cannot run it.
#[test]
fn check_names_what_the_programs_user_cannot_reach() {
    assert!(nix::unistd::geteuid().is_root(), "this test checks another user's access: run it as root");
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let site = base.path().join("site");
    let closed = base.path().join("closed");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::create_dir_all(&closed).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(closed.join("serve"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(closed.join("serve"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let check = |exec: &str, release_root: &Path| {
        let topo = base.path().join("topology.toml");
        std::fs::write(
            &topo,
            format!(
                "role = \"topology\"\nname = \"t\"\n[app]\nexec = [\"{exec}\", \"{{listen}}\"]\nworkdir = \"site\"\nuser = \"nobody\"\nrelease_root = \"{}\"\n\
                 [[host]]\nname = \"h\"\nrole = [{{ name = \"lb1\", kind = \"lb\" }}, {{ name = \"web1\", kind = \"web\" }}, \
                 {{ name = \"app1\", kind = \"app\" }}, {{ name = \"app2\", kind = \"app\" }}, {{ name = \"db1\", kind = \"db\" }}]\n",
                release_root.display()
            ),
        )
        .unwrap();
        let out = Command::new(bulwark_bin()).args(["check", "-c"]).arg(&topo).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check("sh", &base.path().join("releases"));
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check("sh", &closed.join("releases"));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "app1, app2: app.release_root: user `nobody` cannot reach {}",
            closed.join("releases").display()
        )) && err.contains(&format!("{} is mode 0700", closed.display())),
        "{err}"
    );
    // The program, found on PATH or named, is reported with its path and the user.
    let (code, err) = check(closed.join("serve").to_str().unwrap(), &base.path().join("releases"));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("program {} cannot be run as user `nobody`", closed.join("serve").display())),
        "{err}"
    );
}
