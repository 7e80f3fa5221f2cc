//! Schema of `bulwark app`. (Placeholder until the app role lands.)
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Validate for AppConfig {
    fn validate(&self, _v: &mut Validator) {}
}
