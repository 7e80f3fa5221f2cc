//! `bulwark deploy --release DIR` and `bulwark deploy --rollback`: roll a
//! release of the user's program through the app servers, one at a time,
//! without failing a request.
//!
//! Every app server first copies the release in and checks its digest
//! (the directory must be at the same path on every host: the operator
//! copies it there); nothing changes unless every one has it. Then, for
//! each app server in turn: drain it (its `/api/health` answers 503
//! `draining`), wait until every web server reports it unavailable in its
//! `/metrics` (`bulwark_web_upstream_available`), switch its release (the
//! role waits for the requests in flight, restarts the program there and
//! waits until it is healthy), undrain it and wait until every web server
//! sends it requests again. A release that never gets healthy is switched
//! back on that server by the role itself; `deploy` then rolls the
//! servers already switched back the same way and exits 1 with why.
//!
//! The app roles are found in the configs the local `bulwark up` wrote
//! (`DATA/config/`), or, with `-c`, derived from the topology file (a
//! topology over several hosts). The deploy token, the monitoring token
//! and, under mutual TLS, a role certificate are read from the data
//! directory.
use anyhow::{bail, Context, Result};
use bulwark_app::program::release;
use bulwark_config::app::AppConfig;
use bulwark_config::web::WebConfig;
use bulwark_config::Role;
use bulwark_mtls::MutualTls;
use http::Method;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// Directory holding the new release of your program (at this path on
    /// every app host).
    #[arg(long, required_unless_present = "rollback", conflicts_with = "rollback")]
    pub release: Option<PathBuf>,
    /// Go back to the release each app server ran before the last deploy.
    #[arg(long)]
    pub rollback: bool,
    /// Topology file (when the apps run on several hosts); default: the
    /// configs the local `bulwark up` wrote under the data directory.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Data directory of the running topology.
    #[arg(long, default_value = "./bulwark-data")]
    pub data_dir: PathBuf,
}

/// The longest a web server may take to notice a drain or an undrain.
const ROTATION_WAIT: Duration = Duration::from_secs(60);
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// Copying a release in.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);

struct App {
    name: String,
    addr: SocketAddr,
    /// Stopping plus at most two starts (the new release, then the old).
    switch_timeout: Duration,
}

struct Web {
    name: String,
    addr: SocketAddr,
}

struct Targets {
    apps: Vec<App>,
    webs: Vec<Web>,
    deploy_token: String,
    monitor_token: Option<String>,
    tls: Option<MutualTls>,
}

/// The role configs: from the topology (`-c`) or `DATA/config/`.
fn role_configs(args: &DeployArgs) -> Result<Vec<(String, String)>> {
    if let Some(path) = &args.config {
        let mut t: bulwark_config::topology::Topology =
            bulwark_config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        t.data_dir = args.data_dir.clone();
        crate::roles::app::anchor_topology(&mut t, path);
        if t.port_base == 0 {
            bail!("{}: port_base = 0 picks ports at `up`: run deploy without -c on the host of `up`", path.display());
        }
        let data_dir = std::path::absolute(&t.data_dir).unwrap_or_else(|_| t.data_dir.clone());
        let files = bulwark_cluster::derive::SharedFiles::under(&data_dir, &t);
        return Ok(bulwark_cluster::derive::derive(&t, &files, None)
            .into_iter()
            .map(|r| (r.config_path.display().to_string(), r.config))
            .collect());
    }
    let dir = args.data_dir.join("config");
    let entries = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (is `bulwark up` running with this --data-dir?)", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "toml") {
            out.push((p.display().to_string(), std::fs::read_to_string(&p)?));
        }
    }
    out.sort();
    Ok(out)
}

fn targets(args: &DeployArgs) -> Result<Targets> {
    let mut apps = Vec::new();
    let mut webs = Vec::new();
    let (mut deploy_token, mut monitor_token, mut tls) = (None, None, None);
    for (origin, text) in role_configs(args)? {
        match Role::detect(&text) {
            Some(Role::App) => {
                let c: AppConfig = bulwark_config::from_str(&text, &origin).map_err(|e| anyhow::anyhow!("{e}"))?;
                let Some(p) = &c.program else { continue };
                if deploy_token.is_none() {
                    deploy_token = bulwark_config::Secret::resolve(
                        c.deploy_token.as_ref(),
                        c.deploy_token_file.as_deref(),
                        "deploy_token",
                    )
                    .ok()
                    .flatten();
                }
                if tls.is_none() {
                    tls = c.mutual_tls.clone().filter(|t| t.cert.exists() && t.key.exists());
                }
                apps.push(App {
                    name: c.name.clone(),
                    addr: c.listen,
                    switch_timeout: p.stop_grace + 2 * p.start_timeout + Duration::from_secs(60),
                });
            }
            Some(Role::Web) => {
                let c: WebConfig = bulwark_config::from_str(&text, &origin).map_err(|e| anyhow::anyhow!("{e}"))?;
                if monitor_token.is_none() {
                    monitor_token = bulwark_config::Secret::resolve(
                        c.monitor_token.as_ref(),
                        c.monitor_token_file.as_deref(),
                        "monitor_token",
                    )
                    .ok()
                    .flatten();
                }
                if tls.is_none() {
                    tls = c.mutual_tls.clone().filter(|t| t.cert.exists() && t.key.exists());
                }
                let name = Path::new(&origin).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or(origin);
                webs.extend(c.listen.iter().map(|&addr| Web { name: name.clone(), addr }));
            }
            _ => {}
        }
    }
    if apps.is_empty() {
        bail!("no app server runs a program of yours (the topology's [app] exec): there is nothing to deploy");
    }
    let Some(deploy_token) = deploy_token else {
        bail!(
            "no deploy token on this host ({}): run deploy on a host of the topology, or copy that file here",
            bulwark_cluster::secrets::path(&args.data_dir, bulwark_cluster::secrets::Hop::Deploy).display()
        );
    };
    let tls = tls.map(|t| MutualTls::load(&t)).transpose()?;
    Ok(Targets {
        apps,
        webs,
        deploy_token: deploy_token.expose().to_string(),
        monitor_token: monitor_token.map(|s| s.expose().to_string()),
        tls,
    })
}

impl Targets {
    async fn call(
        &self,
        app: &App,
        method: Method,
        action: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<(u16, serde_json::Value)> {
        let path = format!("{}{action}", bulwark_app::deploy::PREFIX);
        let (code, bytes) = bulwark_cluster::http_request(
            app.addr,
            method,
            &path,
            Some(&self.deploy_token),
            body.as_ref(),
            self.tls.as_ref(),
            timeout,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{} ({}): {e}", app.name, app.addr))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Ok((code, v))
    }

    /// `call`, failing on anything but 200 with the role's own words.
    async fn ok(
        &self,
        app: &App,
        action: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let method = if action == "status" { Method::GET } else { Method::POST };
        let (code, v) = self.call(app, method, action, body, timeout).await?;
        if code != 200 {
            bail!("{}: {} ({code})", app.name, v["error"].as_str().unwrap_or("refused"));
        }
        Ok(v)
    }

    /// Whether every web server reports `app` as `available` (true: takes
    /// requests; false: out of rotation). A web server that does not
    /// answer sends nothing: it counts as out of rotation, never as in.
    async fn webs_agree(&self, app: &App, available: bool) -> Result<bool> {
        for web in &self.webs {
            let got = bulwark_cluster::http_get(
                web.addr,
                "/metrics",
                self.monitor_token.as_deref(),
                self.tls.as_ref(),
                STATUS_TIMEOUT,
            )
            .await;
            let seen = match got {
                Ok((200, body)) => upstream_available(&String::from_utf8_lossy(&body), app.addr),
                Ok((code, _)) => {
                    bail!("{} ({}) refused /metrics ({code}): is the monitoring token right?", web.name, web.addr)
                }
                Err(_) => Some(false),
            };
            if seen != Some(available) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn wait_rotation(&self, app: &App, available: bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + ROTATION_WAIT;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if self.webs_agree(app, available).await? {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let what = if available { "sending it requests again" } else { "taking it out of rotation" };
                bail!("{}: the web servers were not all {what} within {ROTATION_WAIT:?}", app.name);
            }
        }
    }

    /// Move one app server to `release`: out of rotation, switch, back in.
    /// [`RollOutcome::NeverHealthy`] when the release never got healthy
    /// there (the role has switched it back); Err when the server or the
    /// web servers did not do their part.
    async fn roll_one(&self, app: &App, target: &str) -> Result<RollOutcome> {
        self.ok(app, "drain", None, STATUS_TIMEOUT).await?;
        if let Err(e) = self.wait_rotation(app, false).await {
            let _ = self.ok(app, "undrain", None, STATUS_TIMEOUT).await;
            return Err(e);
        }
        println!("  {}: out of rotation", app.name);
        let (code, v) = self
            .call(app, Method::POST, "switch", Some(serde_json::json!({ "release": target })), app.switch_timeout)
            .await?;
        let outcome = match code {
            200 => RollOutcome::Switched,
            409 => RollOutcome::NeverHealthy {
                reason: v["error"].as_str().unwrap_or("the release never became healthy").to_string(),
            },
            _ => {
                let _ = self.ok(app, "undrain", None, STATUS_TIMEOUT).await;
                bail!("{}: {} ({code})", app.name, v["error"].as_str().unwrap_or("switch refused"));
            }
        };
        self.ok(app, "undrain", None, STATUS_TIMEOUT).await?;
        self.wait_rotation(app, true).await?;
        match &outcome {
            RollOutcome::Switched => println!("  {}: on release {target}, back in rotation", app.name),
            RollOutcome::NeverHealthy { .. } => println!("  {}: back on its release, in rotation", app.name),
        }
        Ok(outcome)
    }
}

/// How [`Targets::roll_one`] left an app server, back in rotation either way.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RollOutcome {
    /// It runs the new release.
    Switched,
    /// The new release never got healthy there and the role switched the
    /// server back to its release of before; `reason` is the role's why.
    NeverHealthy { reason: String },
}

/// `bulwark_web_upstream_available{...,server="ADDR"} V` of `server` in a
/// web server's metrics.
fn upstream_available(metrics: &str, server: SocketAddr) -> Option<bool> {
    metrics.lines().filter(|l| l.starts_with("bulwark_web_upstream_available{")).find_map(|l| {
        let (labels, value) = l.rsplit_once("} ")?;
        let addr = labels.split("server=\"").nth(1)?.split('"').next()?;
        (addr.parse::<SocketAddr>().ok()? == server).then(|| value.trim() == "1")
    })
}

pub fn main(args: DeployArgs) -> Result<i32> {
    let t = targets(&args)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(&t, &args))
}

async fn run(t: &Targets, args: &DeployArgs) -> Result<i32> {
    // Every app server answers and serves: a rolling deploy takes one out
    // at a time and needs the others.
    let mut before = Vec::new();
    for app in &t.apps {
        let s = t.ok(app, "status", None, STATUS_TIMEOUT).await?;
        if s["draining"] == true {
            // Left by a deploy that did not finish.
            t.ok(app, "undrain", None, STATUS_TIMEOUT).await?;
        }
        if s["program"]["state"] != "healthy" {
            bail!(
                "{} is not healthy ({}): a rolling deploy needs every app server serving; nothing was changed",
                app.name,
                s["program"]["last_error"].as_str().unwrap_or("see its log")
            );
        }
        before.push((s["current"].as_str().unwrap_or("?").to_string(), s["previous"].as_str().map(String::from)));
    }
    if t.apps.len() == 1 {
        eprintln!("bulwark deploy: only one app server: the site's dynamic pages do not answer while it restarts");
    }
    let target = match &args.release {
        Some(dir) => {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            let d = dir.clone();
            let digest = tokio::task::spawn_blocking(move || release::digest(&d)).await??;
            let mut ids = Vec::new();
            let mut problems = Vec::new();
            for app in &t.apps {
                let body = serde_json::json!({ "path": dir, "digest": digest });
                match t.ok(app, "prepare", Some(body), PREPARE_TIMEOUT).await {
                    Ok(v) => ids.push(v["release"].as_str().unwrap_or_default().to_string()),
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
            if !problems.is_empty() {
                bail!(
                    "the release is not ready on every app server; nothing was changed:\n  {}",
                    problems.join("\n  ")
                );
            }
            ids.sort();
            ids.dedup();
            ids.pop().unwrap_or_default()
        }
        None => {
            let previous: Vec<Option<String>> = before.iter().map(|(_, p)| p.clone()).collect();
            match previous.first() {
                Some(Some(p)) if previous.iter().all(|x| x.as_deref() == Some(p.as_str())) => p.clone(),
                _ => bail!("the app servers have no common previous release to go back to: {previous:?}"),
            }
        }
    };
    println!("bulwark deploy: release {target} to {} app server(s), one at a time", t.apps.len());
    let mut switched: Vec<(&App, String)> = Vec::new();
    for (app, (current, _)) in t.apps.iter().zip(&before) {
        if *current == target {
            println!("  {}: already on release {target}", app.name);
            continue;
        }
        match t.roll_one(app, &target).await? {
            RollOutcome::Switched => switched.push((app, current.clone())),
            RollOutcome::NeverHealthy { reason } => {
                eprintln!("bulwark deploy: {reason}");
                for (done, old) in switched.iter().rev() {
                    eprintln!("bulwark deploy: rolling {} back to release {old}", done.name);
                    if let Ok(RollOutcome::NeverHealthy { reason }) = t.roll_one(done, old).await {
                        eprintln!("bulwark deploy: {reason}");
                    }
                }
                eprintln!(
                    "bulwark deploy: release {target} was rolled back; every app server runs its release of before"
                );
                return Ok(1);
            }
        }
    }
    for app in &t.apps {
        if let Ok(v) = t.ok(app, "prune", None, PREPARE_TIMEOUT).await {
            for id in v["removed"].as_array().into_iter().flatten() {
                println!("  {}: removed old release {}", app.name, id.as_str().unwrap_or("?"));
            }
        }
    }
    println!("bulwark deploy: every app server runs release {target}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_web_servers_view_of_an_app() {
        let m = "# HELP bulwark_web_upstream_available Whether requests of the route may go to the server now.\n\
                 # TYPE bulwark_web_upstream_available gauge\n\
                 bulwark_web_upstream_available{route=\"/\",server=\"127.0.0.1:8100\"} 1\n\
                 bulwark_web_upstream_available{route=\"/\",server=\"127.0.0.1:8101\"} 0\n\
                 # EOF\n";
        assert_eq!(upstream_available(m, "127.0.0.1:8100".parse().unwrap()), Some(true));
        assert_eq!(upstream_available(m, "127.0.0.1:8101".parse().unwrap()), Some(false));
        assert_eq!(upstream_available(m, "127.0.0.1:8102".parse().unwrap()), None);
    }
}
