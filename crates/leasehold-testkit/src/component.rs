//! Dapr component files, as tests and benchmarks write them.

/// A lock component named `name` of type `type_name` (for example
/// `lock.redis`) with `metadata` pairs, as Dapr component YAML. Values are
/// written as double-quoted YAML strings.
pub fn component(name: &str, type_name: &str, metadata: &[(&str, &str)]) -> String {
    let mut text = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {type_name}\n  version: v1\n  metadata:\n"
    );
    if metadata.is_empty() {
        text.push_str("  []\n");
    }
    for (key, value) in metadata {
        let value = value.replace('\\', "\\\\").replace('"', "\\\"");
        text.push_str(&format!("  - name: {key}\n    value: \"{value}\"\n"));
    }
    text
}

/// Write `text` as `file` in `dir` (a resources path).
pub fn write(dir: &std::path::Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap_or_else(|err| panic!("cannot write {file}: {err}"));
}
