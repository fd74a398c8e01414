//! Fuzz target of the component loader, written as a plain function of
//! bytes (libFuzzer's shape) so that `cargo fuzz` (`fuzz/`, its own
//! workspace) and a bounded loop in this crate's tests drive the same code.
//! It must return, never panic, whatever the bytes.

use std::collections::HashMap;
use std::path::Path;

use crate::manifest::{LoadContext, Loaded, parse_file};

/// Load the bytes as a component file, with a fixed environment.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<String, String> = [
        ("LOCKS_PASSWORD".to_owned(), "secret".to_owned()),
        ("NAMESPACE".to_owned(), "ns".to_owned()),
    ]
    .into_iter()
    .collect();
    let cx = LoadContext {
        app_id: "app",
        env: &env,
    };
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    parse_file(Path::new("fuzz.yaml"), text, cx, &mut loaded, &mut errors);
    for component in &loaded.components {
        // Whatever loads has a name and a lower-cased type.
        assert!(
            !component.name.is_empty(),
            "a component without a name loaded"
        );
        assert_eq!(component.type_name, component.type_name.to_lowercase());
    }
}
