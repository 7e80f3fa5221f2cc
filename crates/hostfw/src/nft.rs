//! Talking to the kernel through the `nft` program (Debian's `nftables`):
//! install a host's ruleset in one transaction, remove it, and compare the
//! installed table with the plan.
//!
//! The comparison loads the plan into a scratch network namespace
//! (`unshare --net`) and lists it there with the same `nft`, so both sides
//! are in nft's own normal form whatever its version prints; counters,
//! limits' state and the contents of the rate-limit sets are left out of
//! both (`-s -t`).
use crate::plan::HostPlan;
use crate::ruleset::{apply_script, remove_script, FAMILY, TABLE};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why `nft` did not do what was asked. In every case the transaction did
/// not happen: the host's rules are as they were.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft is not installed (Debian: apt-get install nftables); nothing was changed")]
    NotInstalled,
    #[error("nft needs root (CAP_NET_ADMIN); nothing was changed: {0}")]
    NotPermitted(String),
    #[error("this kernel has no nftables support; nothing was changed: {0}")]
    Unsupported(String),
    #[error("nft refused the ruleset; nothing was changed:\n{0}")]
    Rejected(String),
    #[error("running {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("loading the plan into a scratch network namespace to compare it (needs root and unshare): {0}")]
    Scratch(String),
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The installed table is the plan.
    Matches,
    /// No `inet bulwark` table is installed.
    Missing,
    /// It differs: a unified diff, `-` the plan, `+` the installed table.
    Differs(String),
}

fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn nft() -> Result<PathBuf, NftError> {
    find("nft").ok_or(NftError::NotInstalled)
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output, NftError> {
    let spawn_error = |source| NftError::Spawn { program: program.display().to_string(), source };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    let out = child.wait_with_output().map_err(spawn_error)?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn classify(stderr: String) -> NftError {
    if stderr.contains("Operation not permitted") {
        NftError::NotPermitted(stderr)
    } else if stderr.contains("not supported") {
        NftError::Unsupported(stderr)
    } else {
        NftError::Rejected(stderr)
    }
}

/// Load `script` in one transaction: checked first (`nft -c`), so a
/// ruleset this kernel cannot take is reported without touching anything.
fn load(script: &str) -> Result<(), NftError> {
    let nft = nft()?;
    for args in [&["-c", "-f", "-"][..], &["-f", "-"][..]] {
        let out = run(&nft, args, Some(script))?;
        if !out.ok {
            return Err(classify(out.stderr));
        }
    }
    Ok(())
}

/// Install the host's ruleset, replacing any earlier version of the table
/// in the same transaction. Applying twice leaves the same table.
pub fn apply(plan: &HostPlan) -> Result<(), NftError> {
    load(&apply_script(plan))
}

/// Remove the table; `false` when it was not installed. Other tables stay.
pub fn remove() -> Result<bool, NftError> {
    let present = installed()?.is_some();
    if present {
        load(&remove_script())?;
    }
    Ok(present)
}

/// The installed table in nft's normal form, `None` when there is none.
pub fn installed() -> Result<Option<String>, NftError> {
    let nft = nft()?;
    let out = run(&nft, &["-s", "-t", "list", "table", FAMILY, TABLE], None)?;
    if out.ok {
        return Ok(Some(out.stdout));
    }
    if out.stderr.contains("No such file or directory") {
        return Ok(None);
    }
    Err(classify(out.stderr))
}

/// The plan in nft's normal form, as `installed` would list it once applied.
pub fn expected(plan: &HostPlan) -> Result<String, NftError> {
    let nft = nft()?;
    let unshare = find("unshare").ok_or_else(|| NftError::Scratch("unshare (util-linux) is not installed".into()))?;
    let sh = find("sh").ok_or_else(|| NftError::Scratch("no sh".into()))?;
    let list = format!("\"$0\" -f - && exec \"$0\" -s -t list table {FAMILY} {TABLE}");
    let nft_arg = nft.display().to_string();
    let sh_arg = sh.display().to_string();
    let args = ["--net", "--", sh_arg.as_str(), "-c", list.as_str(), nft_arg.as_str()];
    let out = run(&unshare, &args, Some(&crate::ruleset::ruleset(plan)))?;
    if !out.ok {
        return Err(NftError::Scratch(out.stderr));
    }
    Ok(out.stdout)
}

/// Compare what is installed with the plan.
pub fn check(plan: &HostPlan) -> Result<Check, NftError> {
    let Some(installed) = installed()? else {
        return Ok(Check::Missing);
    };
    let expected = expected(plan)?;
    if installed == expected {
        return Ok(Check::Matches);
    }
    let diff = similar::TextDiff::from_lines(&expected, &installed)
        .unified_diff()
        .context_radius(2)
        .header("plan", "installed")
        .to_string();
    Ok(Check::Differs(diff))
}
