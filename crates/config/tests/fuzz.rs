//! Property tests of the config loader: any input, however broken, gives
//! either a config or an error that says where and why; never a panic.
use bulwark_config::{app::AppConfig, db::DbConfig, lb::LbConfig, topology::Topology, web::WebConfig};
use proptest::prelude::*;

const LB: &str = r#"threads = 1
[admin]
bind = "127.0.0.1:0"
[[frontend]]
name = "www"
bind = "127.0.0.1:0"
backend = "web"
firewall = { acl = ["allow 127.0.0.0/8", "deny all"], rate_limit = { per_second = 5 } }
[[backend]]
name = "web"
balance = "source"
health_check = { kind = "http", path = "/health", interval = "2s" }
[[backend.server]]
name = "a"
address = "127.0.0.1:8081"
weight = 3
"#;

fn check_all(text: &str) {
    fn one<T: serde::de::DeserializeOwned + bulwark_config::Validate>(text: &str) {
        if let Err(e) = bulwark_config::from_str::<T>(text, "fuzz.toml") {
            assert!(!e.issues.is_empty());
            for i in &e.issues {
                assert!(!i.message.is_empty(), "empty error message for {text:?}");
            }
            let _ = e.to_string();
        }
    }
    one::<LbConfig>(text);
    one::<WebConfig>(text);
    one::<AppConfig>(text);
    one::<DbConfig>(text);
    one::<Topology>(text);
    let _ = bulwark_config::Role::detect(text);
}

#[test]
fn truncated_value_has_a_message() {
    let err = bulwark_config::from_str::<LbConfig>("threads = ", "t.toml").unwrap_err();
    assert!(!err.issues[0].message.is_empty(), "{err:?}");
    assert_eq!(err.issues[0].line, Some(1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check_all(&text);
    }

    #[test]
    fn mutated_configs_never_panic(pos in 0usize..LB.len(), insert in "[\\[\\]{}=\",.#a-z0-9 \n/:*-]{0,12}", cut in 0usize..20) {
        let mut s = LB.to_string();
        let pos = (0..=pos).rev().find(|p| s.is_char_boundary(*p)).unwrap_or(0);
        let end = (pos + cut).min(s.len());
        let end = (end..=s.len()).find(|p| s.is_char_boundary(*p)).unwrap_or(s.len());
        s.replace_range(pos..end, &insert);
        check_all(&s);
    }

    #[test]
    fn valid_values_in_every_numeric_key_are_checked(weight in any::<i64>(), threads in any::<i64>()) {
        let text = LB.replace("weight = 3", &format!("weight = {weight}")).replace("threads = 1", &format!("threads = {threads}"));
        match bulwark_config::from_str::<LbConfig>(&text, "x.toml") {
            Ok(c) => {
                prop_assert!((1..=256).contains(&c.backends[0].servers[0].weight));
                prop_assert!(c.threads <= 1024);
            }
            Err(e) => prop_assert!(e.issues.iter().all(|i| i.line.is_some()), "{}", e),
        }
    }
}
