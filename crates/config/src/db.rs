//! Schema of `bulwark db`. (Placeholder until the db role lands.)
use crate::{Validate, Validator};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Validate for DbConfig {
    fn validate(&self, _v: &mut Validator) {}
}
