//! `bulwark app`: command-line arguments and start-up of the application
//! server, and the checks of a `[program]` that `check` and `up` run.
use anyhow::{Context, Result};
use bulwark_config::app::{AppConfig, Program};
use bulwark_config::topology::{RoleKind, Topology};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Path of the app config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
}

/// A relative `workdir` is relative to the directory of the file that
/// names it.
pub fn anchor_workdir(program: &mut Program, file: &Path) {
    if let Some(w) = &mut program.workdir {
        if w.is_relative() {
            let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let joined = base.join(&*w);
            *w = std::path::absolute(&joined).unwrap_or(joined);
        }
    }
}

/// The problems of an app config's `[program]` or a topology's `[app]`
/// that show before anything runs (see `bulwark_app::program::check`),
/// each naming the role instances and the key.
pub fn check_programs(path: &Path, role: bulwark_config::Role) -> Vec<String> {
    match role {
        bulwark_config::Role::App => {
            let Ok(mut c) = bulwark_config::load::<AppConfig>(path) else { return Vec::new() };
            let Some(p) = c.program.as_mut() else { return Vec::new() };
            anchor_workdir(p, path);
            bulwark_app::program::check(p)
                .into_iter()
                .map(|e| format!("{}: app {}: program.{e}", path.display(), c.name))
                .collect()
        }
        bulwark_config::Role::Topology => {
            let Ok(mut t) = bulwark_config::load::<Topology>(path) else { return Vec::new() };
            anchor_topology(&mut t, path);
            topology_problems(&t).into_iter().map(|e| format!("{}: {e}", path.display())).collect()
        }
        _ => Vec::new(),
    }
}

/// Make the topology's `[app] workdir` and `release_root` absolute
/// (relative to `file`'s directory), and default `static` to the `static`
/// directory under `workdir` when there is one.
pub fn anchor_topology(t: &mut Topology, file: &Path) {
    if let Some(w) = &t.app.workdir {
        if w.is_relative() {
            let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let joined = base.join(w);
            t.app.workdir = Some(std::path::absolute(&joined).unwrap_or(joined));
        }
    }
    if let Some(r) = &t.app.release_root {
        if r.is_relative() {
            let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let joined = base.join(r);
            t.app.release_root = Some(std::path::absolute(&joined).unwrap_or(joined));
        }
    }
    if let (Some(w), None, false) = (&t.app.workdir, &t.app.static_dir, t.app.exec.is_empty()) {
        if w.join("static").is_dir() {
            t.app.static_dir = Some("static".into());
        }
    }
}

/// The static problems of the topology's `[app]` program, naming its app
/// role instances: `app1, app2: app.exec[0]: program `x` not found on PATH`.
pub fn topology_problems(t: &Topology) -> Vec<String> {
    let Some(p) = t.app.program() else { return Vec::new() };
    let names: Vec<String> = t.of_kind(RoleKind::App).into_iter().map(|a| a.name).collect();
    let mut problems: Vec<String> =
        bulwark_app::program::check(&p).into_iter().map(|e| format!("{}: app.{e}", names.join(", "))).collect();
    if let Some(why) = release_root_problem(t, &p) {
        problems.push(format!("{}: app.release_root: {why}", names.join(", ")));
    }
    problems
}

/// Why the program's `user` could not reach the releases `bulwark deploy`
/// keeps (so no release could run), if so: checked on the release root,
/// or the nearest of its parents that exists.
fn release_root_problem(t: &Topology, p: &Program) -> Option<String> {
    let user = p.user.as_deref()?;
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let (uid, gid, _) = bulwark_app::program::lookup_user(user).ok()?;
    let data_dir = std::path::absolute(&t.data_dir).unwrap_or_else(|_| t.data_dir.clone());
    let root = t.app.release_root(&data_dir);
    let existing = root.ancestors().find(|a| a.exists())?;
    bulwark_app::program::user_may(existing, uid, gid, bulwark_app::program::Access::Read).err().map(|why| {
        format!(
            "user `{user}` cannot reach {}, where the releases of `bulwark deploy` are kept: {why}; \
             set release_root to a directory it can reach (outside the data directory)",
            root.display()
        )
    })
}

/// Before any role of this host starts: the release directory of each of
/// its apps that runs a program, with `current` leading to a release (see
/// `Releases::prepare`): the web tier serves the site's static files
/// through that link. A program run as another user can read its releases.
pub fn prepare_releases(t: &Topology, files: &bulwark_cluster::derive::SharedFiles, host: Option<&str>) -> Result<()> {
    let Some(p) = t.app.program() else { return Ok(()) };
    // An unknown user is reported by `topology_problems`.
    let reader = p
        .user
        .as_deref()
        .filter(|_| nix::unistd::geteuid().is_root())
        .and_then(|u| bulwark_app::program::lookup_user(u).ok())
        .map(|(_, gid, _)| gid);
    for app in t.of_kind(RoleKind::App).into_iter().filter(|a| host.is_none_or(|h| h == a.host)) {
        let dir = bulwark_cluster::derive::release_dir(t, files, &app.name);
        let mut releases = bulwark_app::program::release::Releases::new(
            dir.clone(),
            t.app.keep_releases.unwrap_or_else(bulwark_config::app::default_keep_releases),
            p.workdir.clone(),
        );
        if let Some(gid) = reader {
            releases = releases.readable_by(gid);
        }
        releases.prepare().with_context(|| format!("{}: preparing its releases in {}", app.name, dir.display()))?;
    }
    Ok(())
}

pub fn main(args: Args) -> Result<i32> {
    let mut config: AppConfig = bulwark_config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(p) = config.program.as_mut() {
        anchor_workdir(p, &args.config);
    }
    // One thread: a current-thread runtime, where a task woken by another
    // never wakes a second thread (as the db role does).
    let rt = match config.threads {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        n => super::runtime(n)?,
    };
    rt.block_on(async move {
        let server = bulwark_app::AppServer::bind(config).await.context("starting the application server")?;
        let shutdown = CancellationToken::new();
        tokio::spawn(super::shutdown_on_signal(shutdown.clone()));
        super::announce("app", &server.listeners());
        if let Some(status) = server.program_status() {
            tokio::spawn(report_failed_start(status));
        }
        server.run(shutdown).await;
        Ok(0)
    })
}

/// Until the program first answers its health path, print each new reason
/// it failed to start as a failed line (see `super::announce_failure`):
/// `up` shows it naming the role instead of waiting for a readiness that
/// will not come.
async fn report_failed_start(mut status: tokio::sync::watch::Receiver<bulwark_app::ProgramStatus>) {
    let mut reported: Option<String> = None;
    loop {
        {
            let st = status.borrow_and_update();
            if st.ever_healthy {
                return;
            }
            if st.state == bulwark_app::ProgramState::Backoff && st.last_error != reported {
                if let Some(e) = &st.last_error {
                    super::announce_failure("app", e);
                }
                reported = st.last_error.clone();
            }
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}
