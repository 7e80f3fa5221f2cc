//! Schema of `bulwark web`. (Placeholder until the web role lands.)
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Validate for WebConfig {
    fn validate(&self, _v: &mut Validator) {}
}
