//! The host firewall of a Bulwark topology: each host's nftables ruleset,
//! derived from the topology (`bulwark firewall plan|apply|check|remove`,
//! and `up --host NAME` with `[firewall] manage = true`).
//!
//! Owns: the plan (every listener of every host and who may reach it,
//! [`plan::listeners`]), its nftables text ([`ruleset`]), and installing,
//! comparing and removing it through `nft` ([`nft`]), always as one atomic
//! transaction on its own table, `inet bulwark`.
//!
//! Must not touch: any other nftables table or chain of the host (the
//! operator's own rules stay as they are), iptables, the interfaces and
//! addresses (VRRP's floating addresses are the lb's), and the request
//! filtering inside the roles (`bulwark-firewall`: ACLs, rate limits),
//! which this complements.

pub mod nft;
pub mod plan;
pub mod ruleset;

pub use nft::{Check, NftError};
pub use plan::{host_plan, listeners, HostPlan, PlanError};

#[cfg(test)]
mod tests;
