//! Dapr component YAML, read the way daprd reads it.
//!
//! * every `*.yaml` / `*.yml` file directly inside each resources directory,
//!   split into documents on `\n---`;
//! * a document counts only when `apiVersion` is `dapr.io/v1alpha1` and
//!   `kind` is `Component`; anything else is skipped silently;
//! * field names match case-insensitively (daprd goes through Go's JSON
//!   decoder, which does that);
//! * `scopes` leave out a component whose list does not name this app;
//! * metadata values may be `envRef`s and may carry the templates `{uuid}`,
//!   `{podName}`, `{namespace}` and `{appID}`.
//!
//! Every problem in every file is collected, so a start-up refusal lists
//! them all at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::duration::parse_go_duration;
use crate::metadata::{Metadata, parse_go_bool};

/// Environment variables that `envRef` may not read: they hold the
/// sidecar's own credentials.
const REFUSED_ENV_REFS: &[&str] = &["DAPR_API_TOKEN", "APP_API_TOKEN", "LEASEHOLD_ADMIN_TOKEN"];

/// Reads process environment variables. Tests pass a fixed map instead of
/// touching the real environment.
pub trait Env {
    /// The value of `name`, or `None` when unset or empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }
}

impl<S: std::hash::BuildHasher> Env for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).filter(|value| !value.is_empty()).cloned()
    }
}

/// One lock store component, as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    /// `metadata.name`: the store name clients use.
    pub name: String,
    /// `spec.type`, lower-cased (`lock.redis`).
    pub type_name: String,
    /// `spec.version` as written (`v1`, `v0` or empty).
    pub version: String,
    /// `spec.initTimeout`, if given.
    pub init_timeout: Option<Duration>,
    /// `spec.ignoreErrors`: a store that fails to start is left out instead
    /// of stopping the sidecar.
    pub ignore_errors: bool,
    /// `spec.metadata`, resolved.
    pub metadata: Metadata,
    /// The file it came from.
    pub source: PathBuf,
}

impl Component {
    /// The part of the type after `lock.` (`redis`).
    pub fn kind(&self) -> &str {
        self.type_name
            .strip_prefix("lock.")
            .unwrap_or(&self.type_name)
    }
}

/// A problem in a component file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file.
    pub file: PathBuf,
    /// The component, when the problem belongs to one.
    pub component: Option<String>,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(component) = &self.component {
            write!(f, ": component {component:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What loading found: lock components, the documents that were skipped on
/// purpose (other building blocks, other apps' scopes) for the start-up log,
/// and every problem.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Lock store components for this app (those that parsed).
    pub components: Vec<Component>,
    /// Human-readable notes on what was left out and why.
    pub skipped: Vec<String>,
    /// Every problem found; the caller adds its own checks of the
    /// components before it refuses to start, so all are listed at once.
    pub errors: Vec<ManifestError>,
}

/// The context a manifest is resolved in.
#[derive(Debug, Clone, Copy)]
pub struct LoadContext<'a> {
    /// The sidecar's app id (for `scopes`, `{appID}`, `{namespace}`).
    pub app_id: &'a str,
    /// Where `envRef`s and `NAMESPACE` / `POD_NAME` are read.
    pub env: &'a dyn Env,
}

impl fmt::Debug for dyn Env + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env")
    }
}

/// Load every component file in `dirs`. Problems are collected in
/// [`Loaded::errors`], never returned early.
pub fn load_dirs(dirs: &[PathBuf], cx: LoadContext<'_>) -> Loaded {
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                errors.push(ManifestError {
                    file: dir.clone(),
                    component: None,
                    message: format!("cannot read resources directory: {err}"),
                });
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .filter(|path| {
                matches!(
                    path.extension().and_then(|ext| ext.to_str()),
                    Some("yaml" | "yml")
                )
            })
            .collect();
        files.sort();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => parse_file(&file, &text, cx, &mut loaded, &mut errors),
                Err(err) => errors.push(ManifestError {
                    file: file.clone(),
                    component: None,
                    message: format!("cannot read file: {err}"),
                }),
            }
        }
    }
    check_duplicates(&loaded.components, &mut errors);
    loaded.errors = errors;
    loaded
}

/// Parse the text of one file (possibly several documents) into `loaded`.
pub fn parse_file(
    file: &Path,
    text: &str,
    cx: LoadContext<'_>,
    loaded: &mut Loaded,
    errors: &mut Vec<ManifestError>,
) {
    for document in text.split("\n---") {
        if document.trim().is_empty() || document.trim() == "---" {
            continue;
        }
        let value: Value = match serde_yaml_ng::from_str(document) {
            Ok(value) => value,
            Err(err) => {
                errors.push(ManifestError {
                    file: file.to_owned(),
                    component: None,
                    message: format!("invalid YAML: {err}"),
                });
                continue;
            }
        };
        if let Some(result) = parse_document(&value, file, cx) {
            match result {
                Ok(Parsed::Component(component)) => loaded.components.push(component),
                Ok(Parsed::Skipped(note)) => loaded.skipped.push(note),
                Err(mut problems) => errors.append(&mut problems),
            }
        }
    }
}

enum Parsed {
    Component(Component),
    Skipped(String),
}

/// Look a key up in a mapping, ignoring case.
fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    value.as_mapping()?.iter().find_map(|(key, value)| {
        key.as_str()
            .filter(|key| key.eq_ignore_ascii_case(name))
            .map(|_| value)
    })
}

/// A scalar as Go's YAML-to-JSON path renders it: strings unquoted, numbers
/// and booleans as their literal text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn parse_document(
    doc: &Value,
    file: &Path,
    cx: LoadContext<'_>,
) -> Option<Result<Parsed, Vec<ManifestError>>> {
    let api_version = field(doc, "apiVersion").and_then(Value::as_str);
    let kind = field(doc, "kind").and_then(Value::as_str);
    if api_version != Some("dapr.io/v1alpha1") || kind != Some("Component") {
        return None;
    }
    let meta = field(doc, "metadata");
    let name = meta
        .and_then(|m| field(m, "name"))
        .and_then(scalar_text)
        .unwrap_or_default();
    let mut errors = Vec::new();
    let mut fail = |message: String| {
        errors.push(ManifestError {
            file: file.to_owned(),
            component: (!name.is_empty()).then(|| name.clone()),
            message,
        })
    };

    if name.is_empty() {
        fail("metadata.name is required".to_owned());
    } else if name == "." || name == ".." || name.contains('/') || name.contains('%') {
        fail(format!(
            "metadata.name {name:?} must be usable as one URL path segment (no '/', '%', '.' or '..')"
        ));
    }

    // `scopes`: an empty or missing list means every app.
    if let Some(scopes) = field(doc, "scopes").and_then(Value::as_sequence) {
        let scopes: Vec<String> = scopes.iter().filter_map(scalar_text).collect();
        if !scopes.is_empty() && !scopes.iter().any(|scope| scope == cx.app_id) {
            return Some(Ok(Parsed::Skipped(format!(
                "component {name:?} in {}: scoped to {scopes:?}, not to app {:?}",
                file.display(),
                cx.app_id
            ))));
        }
    }

    // A namespace mismatch leaves the component out, as in daprd.
    let namespace = meta
        .and_then(|m| field(m, "namespace"))
        .and_then(scalar_text);
    let env_namespace = cx.env.var("NAMESPACE");
    if let (Some(ours), Some(theirs)) = (&env_namespace, &namespace)
        && !theirs.is_empty()
        && ours != theirs
    {
        return Some(Ok(Parsed::Skipped(format!(
            "component {name:?} in {}: namespace {theirs:?} is not {ours:?}",
            file.display()
        ))));
    }

    let spec = field(doc, "spec");
    let type_name = spec
        .and_then(|s| field(s, "type"))
        .and_then(scalar_text)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if type_name.is_empty() {
        fail("spec.type is required".to_owned());
    } else if !type_name.starts_with("lock.") {
        // Other building blocks (state, pubsub, ...) share resources folders
        // with lock stores; they are not ours to load.
        return Some(Ok(Parsed::Skipped(format!(
            "component {name:?} in {}: type {type_name} is not a lock store",
            file.display()
        ))));
    }
    let version = spec
        .and_then(|s| field(s, "version"))
        .and_then(scalar_text)
        .unwrap_or_default();
    if !matches!(version.as_str(), "" | "v0" | "v1") {
        fail(format!(
            "couldn't find lock store {type_name}/{version}: only versions v1, v0 or none exist"
        ));
    }

    let init_timeout = match spec
        .and_then(|s| field(s, "initTimeout"))
        .and_then(scalar_text)
    {
        None => None,
        Some(raw) if raw.is_empty() => None,
        Some(raw) => match parse_go_duration(&raw) {
            Ok(timeout) => Some(timeout),
            Err(err) => {
                fail(format!("spec.initTimeout: {err}"));
                None
            }
        },
    };
    let ignore_errors = match spec
        .and_then(|s| field(s, "ignoreErrors"))
        .and_then(scalar_text)
    {
        None => false,
        Some(raw) if raw.is_empty() => false,
        Some(raw) => parse_go_bool(&raw).unwrap_or_else(|| {
            fail(format!("spec.ignoreErrors: {raw:?} is not a boolean"));
            false
        }),
    };

    let mut metadata = Metadata::default();
    let items = spec.and_then(|s| field(s, "metadata"));
    match items {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for (index, item) in items.iter().enumerate() {
                match resolve_item(item, index, namespace.as_deref(), cx) {
                    Ok((key, value)) => metadata.insert(key, value),
                    Err(message) => fail(message),
                }
            }
        }
        Some(_) => fail("spec.metadata must be a list of {name, value} entries".to_owned()),
    }

    if !errors.is_empty() {
        return Some(Err(errors));
    }
    Some(Ok(Parsed::Component(Component {
        name,
        type_name,
        version,
        init_timeout,
        ignore_errors,
        metadata,
        source: file.to_owned(),
    })))
}

fn resolve_item(
    item: &Value,
    index: usize,
    namespace: Option<&str>,
    cx: LoadContext<'_>,
) -> Result<(String, String), String> {
    let key = field(item, "name")
        .and_then(scalar_text)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| format!("spec.metadata[{index}].name is required"))?;
    let raw = match field(item, "value") {
        None => String::new(),
        Some(value) => scalar_text(value).ok_or_else(|| {
            format!("spec.metadata `{key}`: value must be a string, number or boolean")
        })?,
    };
    let value = if !raw.is_empty() {
        raw
    } else if let Some(var) = field(item, "envRef")
        .and_then(scalar_text)
        .filter(|v| !v.is_empty())
    {
        if REFUSED_ENV_REFS
            .iter()
            .any(|refused| refused.eq_ignore_ascii_case(&var))
        {
            return Err(format!(
                "spec.metadata `{key}`: envRef may not read {var}, which holds the sidecar's own credentials"
            ));
        }
        cx.env.var(&var).unwrap_or_default()
    } else if field(item, "secretKeyRef").is_some() {
        return Err(format!(
            "spec.metadata `{key}`: secretKeyRef needs a Dapr secret store, which leasehold does not load; use envRef or a value"
        ));
    } else {
        String::new()
    };
    let value = expand_templates(&value, namespace, cx)
        .map_err(|err| format!("spec.metadata `{key}`: {err}"))?;
    Ok((key, value))
}

/// Replace `{uuid}`, `{podName}`, `{namespace}` and `{appID}` as daprd does.
fn expand_templates(
    value: &str,
    namespace: Option<&str>,
    cx: LoadContext<'_>,
) -> Result<String, String> {
    if !value.contains('{') {
        return Ok(value.to_owned());
    }
    let mut out = value.to_owned();
    while out.contains("{uuid}") {
        out = out.replacen("{uuid}", &uuid::Uuid::new_v4().to_string(), 1);
    }
    if out.contains("{podName}") {
        let pod = cx
            .env
            .var("POD_NAME")
            .ok_or("the {podName} template needs the POD_NAME environment variable")?;
        out = out.replace("{podName}", &pod);
    }
    if out.contains("{namespace}") {
        let ns = cx
            .env
            .var("NAMESPACE")
            .or_else(|| namespace.map(str::to_owned))
            .unwrap_or_default();
        out = out.replace("{namespace}", &format!("{ns}.{}", cx.app_id));
    }
    Ok(out.replace("{appID}", cx.app_id))
}

fn check_duplicates(components: &[Component], errors: &mut Vec<ManifestError>) {
    for (index, component) in components.iter().enumerate() {
        if let Some(first) = components[..index]
            .iter()
            .find(|c| c.name == component.name)
        {
            errors.push(ManifestError {
                file: component.source.clone(),
                component: Some(component.name.clone()),
                message: format!(
                    "duplicate component name: also declared in {}",
                    first.source.display()
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(
        text: &str,
        env: &HashMap<String, String>,
        app: &str,
    ) -> Result<Loaded, Vec<ManifestError>> {
        let mut loaded = Loaded::default();
        let mut errors = Vec::new();
        let cx = LoadContext { app_id: app, env };
        parse_file(Path::new("c.yaml"), text, cx, &mut loaded, &mut errors);
        check_duplicates(&loaded.components, &mut errors);
        if errors.is_empty() {
            Ok(loaded)
        } else {
            Err(errors)
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const REDIS: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: lockstore
spec:
  type: lock.Redis
  version: v1
  initTimeout: 10s
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: redisDB
    value: 3
  - name: enableTLS
    value: false
  - name: redisPassword
    envRef: REDIS_PW
"#;

    #[test]
    fn reads_a_daprd_component() {
        let loaded = parse(REDIS, &env(&[("REDIS_PW", "pw")]), "app").unwrap();
        let c = &loaded.components[0];
        assert_eq!(c.name, "lockstore");
        assert_eq!(c.type_name, "lock.redis");
        assert_eq!(c.kind(), "redis");
        assert_eq!(c.init_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.metadata.get("REDISHOST"), Some("localhost:6379"));
        assert_eq!(c.metadata.get("redisDB"), Some("3"));
        assert_eq!(c.metadata.get("enableTLS"), Some("false"));
        assert_eq!(c.metadata.get("redisPassword"), Some("pw"));
    }

    #[test]
    fn field_names_ignore_case_and_other_documents_are_skipped() {
        let text = "apiversion: dapr.io/v1alpha1\nKIND: Component\nMetadata: {Name: a}\nSpec: {Type: lock.in-memory}\n---\napiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: cfg}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: state}\nspec: {type: state.redis, version: v1}\n";
        let loaded = parse(text, &env(&[]), "app").unwrap();
        assert_eq!(loaded.components.len(), 1);
        assert_eq!(loaded.components[0].name, "a");
        assert_eq!(loaded.skipped.len(), 1, "{:?}", loaded.skipped);
    }

    #[test]
    fn scopes_and_namespaces_filter() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: a, namespace: prod}\nspec: {type: lock.in-memory}\nscopes: [other]\n";
        assert!(parse(text, &env(&[]), "app").unwrap().components.is_empty());
        let text = text.replace("[other]", "[other, app]");
        assert_eq!(parse(&text, &env(&[]), "app").unwrap().components.len(), 1);
        assert!(
            parse(&text, &env(&[("NAMESPACE", "dev")]), "app")
                .unwrap()
                .components
                .is_empty()
        );
        assert_eq!(
            parse(&text, &env(&[("NAMESPACE", "prod")]), "app")
                .unwrap()
                .components
                .len(),
            1
        );
    }

    #[test]
    fn templates_expand() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: a}\nspec:\n  type: lock.in-memory\n  metadata:\n  - {name: x, value: 'id-{uuid}-{uuid}'}\n  - {name: y, value: '{appID}'}\n  - {name: z, value: '{namespace}'}\n  - {name: p, value: '{podName}'}\n";
        let loaded = parse(
            text,
            &env(&[("NAMESPACE", "ns"), ("POD_NAME", "pod-1")]),
            "app",
        )
        .unwrap();
        let md = &loaded.components[0].metadata;
        let x = md.get("x").unwrap();
        assert_eq!(x.len(), "id--".len() + 72);
        let parts: Vec<_> = x.trim_start_matches("id-").splitn(2, "-").collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(md.get("y"), Some("app"));
        assert_eq!(md.get("z"), Some("ns.app"));
        assert_eq!(md.get("p"), Some("pod-1"));
        let errors = parse(text, &env(&[]), "app").unwrap_err();
        assert!(errors[0].message.contains("POD_NAME"), "{errors:?}");
    }

    #[test]
    fn every_problem_is_listed() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: a}\nspec:\n  type: lock.redis\n  version: v2\n  initTimeout: soon\n  metadata:\n  - {value: x}\n  - {name: t, envRef: DAPR_API_TOKEN}\n  - {name: s, secretKeyRef: {name: x}}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: b}\nspec: {type: lock.x}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: b}\nspec: {type: lock.y}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: 'a/b'}\nspec: {}\n";
        let errors = parse(text, &env(&[]), "app").unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let joined = messages.join("\n");
        for needle in [
            "couldn't find lock store lock.redis/v2",
            "spec.initTimeout",
            "spec.metadata[0].name is required",
            "may not read DAPR_API_TOKEN",
            "secretKeyRef",
            "duplicate component name",
            "one URL path segment",
            "spec.type is required",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in\n{joined}");
        }
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let errors = parse("apiVersion: [\n", &env(&[]), "app").unwrap_err();
        assert!(errors[0].to_string().starts_with("c.yaml: invalid YAML"));
    }
}
