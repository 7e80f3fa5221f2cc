//! Schema of a whole topology (`bulwark up`). (Placeholder until `up` lands.)
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Validate for Topology {
    fn validate(&self, _v: &mut Validator) {}
}
