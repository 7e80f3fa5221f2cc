//! `bulwark up`: runs a topology's roles as supervised child processes.
//!
//! Owns: spawning each role as `bulwark <kind> -c <file>` (a child of the
//! same binary), reading its ready line, waiting for readiness in stage
//! order (databases, then apps, webs, load balancers), restarting crashed
//! children with backoff, stopping and starting single roles through a
//! control socket, and graceful shutdown in reverse order.
//!
//! Must not touch: what a role does or how its config is derived (that is
//! `bulwark-config`'s topology module); this crate only runs processes.

mod control;
pub mod derive;
mod probe;
mod supervisor;

pub use control::{request as control_request, ControlReply, ControlRequest};
pub use probe::http_get;
pub use supervisor::{ChildSpec, ChildStatus, Readiness, RestartPolicy, Supervisor, SupervisorError};
