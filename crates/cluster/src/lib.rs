//! `bulwark up`: runs a topology's roles as supervised child processes.
//!
//! Owns: spawning each role as `bulwark <kind> -c <file>` (a child of the
//! same binary), reading its ready line, waiting for readiness in stage
//! order (databases, then apps, webs, load balancers), restarting crashed
//! children with backoff, stopping and starting single roles through a
//! control socket (mode 0600, and only the supervisor's own user or root
//! may use it), and graceful shutdown in reverse order. What it writes
//! is private to its user: directories 0700, logs and secrets 0600.
//!
//! Must not touch: what a role does or how its config is derived (that is
//! `bulwark-config`'s topology module); this crate only runs processes.

mod control;
pub mod derive;
pub mod pki;
pub mod private;
mod probe;
pub mod secrets;
mod supervisor;

pub use control::{request as control_request, ControlReply, ControlRequest};
pub use probe::{http_get, http_request, RequestError};
pub use supervisor::{ChildSpec, ChildStatus, Readiness, RestartPolicy, Supervisor, SupervisorError};
