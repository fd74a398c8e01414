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
//!   `{podName}`, `{namespace}` and `{appID}`;
//! * `secretKeyRef` metadata is read, once every file is loaded, through the
//!   secret store component that `auth.secretStore` names
//!   ([`crate::secretstore`]: `secretstores.local.file` and
//!   `secretstores.local.env`);
//! * every component document read for this app, of any type, is listed in
//!   [`Loaded::documents`] with its name, type and version as written.
//!
//! Every problem in every file is collected, so a start-up refusal lists
//! them all at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::duration::parse_go_duration;
use crate::metadata::{Metadata, Secret, parse_go_bool};
use crate::secretstore::{SUPPORTED_TYPES, SecretStore, SecretStoreComponent};

/// daprd's init timeout when `spec.initTimeout` is absent, not a duration,
/// or not above zero (`DefaultComponentInitTimeout`).
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// `spec.version` as written (`v1`, `V1`, `v0` or empty; compared
    /// lower-cased, as daprd does).
    pub version: String,
    /// `spec.initTimeout`, when it is a duration above zero; otherwise
    /// `None`, and daprd's [`DEFAULT_INIT_TIMEOUT`] applies.
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

/// What kind of building block a component document declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Category {
    /// `lock.*`: served by leasehold.
    LockStore,
    /// `secretstores.*`: read for `secretKeyRef` when leasehold has the
    /// type, otherwise left alone unless a lock store needs it.
    SecretStore,
    /// Anything else (`state.*`, `pubsub.*`, ...): not leasehold's to load,
    /// but daprd would, so it is listed.
    Other,
}

/// One component document read for this app, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentDocument {
    /// `metadata.name` as written.
    pub name: String,
    /// `spec.type` as written (`lock.Redis` stays `lock.Redis`).
    pub type_name: String,
    /// `spec.version` as written; empty when absent.
    pub version: String,
    /// Which building block the type belongs to.
    pub category: Category,
    /// The file it came from.
    pub source: PathBuf,
}

/// What loading found: lock components, secret store components, every
/// component document read for this app, notes on what was left out, and
/// every problem.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Lock store components for this app (those that parsed).
    pub components: Vec<Component>,
    /// Secret store components for this app, of every type.
    pub secret_stores: Vec<SecretStoreComponent>,
    /// Every component document read for this app, whatever its type, in
    /// the order read. See [`Loaded::registered_components`].
    pub documents: Vec<ComponentDocument>,
    /// Human-readable notes on what was left out on purpose (other apps'
    /// scopes, other namespaces, other building blocks), for an info log.
    pub skipped: Vec<String>,
    /// Human-readable notes on what daprd would accept but deserves a look
    /// (an `initTimeout` that falls back to the default, a component left
    /// out because of `ignoreErrors`), for a warning log.
    pub warnings: Vec<String>,
    /// Every problem found; the caller adds its own checks of the
    /// components before it refuses to start, so all are listed at once.
    pub errors: Vec<ManifestError>,
    /// `secretKeyRef` items of lock components, resolved by
    /// [`Loaded::resolve`] once every file is read.
    secret_refs: Vec<SecretRef>,
    /// Components left out by [`Loaded::resolve`] because of `ignoreErrors`:
    /// (name, source).
    left_out: Vec<(String, PathBuf)>,
}

/// A metadata value to read from a secret store.
#[derive(Debug, Clone)]
struct SecretRef {
    /// The component's name and file: the component in
    /// [`Loaded::components`] to fill in, found by these rather than by
    /// position, since callers may change that list before resolving.
    component_name: String,
    source: PathBuf,
    /// Whether the component was added to [`Loaded::components`]; not when
    /// it has other problems (its secrets are still looked up, so that
    /// every problem is listed at once).
    added: bool,
    /// The metadata name.
    field: String,
    /// `auth.secretStore` of the component, as written (may be empty).
    store: String,
    /// `secretKeyRef.name`.
    name: String,
    /// `secretKeyRef.key`, or the name when that is empty (as daprd).
    key: String,
    /// `metadata.namespace` of the component, for the `{namespace}`
    /// template.
    namespace: Option<String>,
}

impl Loaded {
    /// The component documents daprd would list in `/v1.0/metadata` for
    /// this app: every document of [`Loaded::documents`] (lock stores,
    /// secret stores, and every other type, name, type and version as
    /// written, in the order read) except those that [`Loaded::resolve`]
    /// left out because of `ignoreErrors`. Scopes and namespaces are already
    /// applied: a component for other apps is not in [`Loaded::documents`]
    /// at all. The caller still removes lock stores that it leaves out
    /// itself (a store that fails to open under `ignoreErrors`).
    pub fn registered_components(&self) -> impl Iterator<Item = &ComponentDocument> {
        self.documents.iter().filter(|document| {
            !self
                .left_out
                .iter()
                .any(|(name, source)| *name == document.name && *source == document.source)
        })
    }

    /// Every value read from a secret store: for a process to keep out of
    /// its logs.
    pub fn secret_values(&self) -> impl Iterator<Item = &Secret> {
        self.components
            .iter()
            .flat_map(|component| component.metadata.secret_values())
    }

    /// Finish loading once every file is parsed: check that names are
    /// unique, load the secret stores, and resolve every `secretKeyRef`.
    /// [`load_dirs`] calls this; a caller of [`parse_file`] calls it once,
    /// after its last file. Problems go to `errors`.
    pub fn resolve(&mut self, cx: LoadContext<'_>, errors: &mut Vec<ManifestError>) {
        check_duplicates(&self.documents, errors);
        let stores = self.open_secret_stores(errors);
        self.resolve_secret_refs(&stores, cx, errors);
    }

    /// Open each secret store leasehold has; report the others only when a
    /// lock store needs them (in [`Loaded::resolve_secret_refs`]).
    fn open_secret_stores(
        &mut self,
        errors: &mut Vec<ManifestError>,
    ) -> Vec<Result<SecretStore, String>> {
        let mut opened = Vec::with_capacity(self.secret_stores.len());
        for component in &self.secret_stores {
            if !component.is_supported() {
                opened.push(Err(format!(
                    "leasehold does not have this type of secret store; it reads secrets through {}",
                    SUPPORTED_TYPES.join(" and ")
                )));
                let used = self.secret_refs.iter().any(|r| r.store == component.name);
                if !used {
                    self.skipped.push(format!(
                        "secret store {:?} in {}: type {} is not one leasehold has, and no lock store uses it",
                        component.name,
                        component.source.display(),
                        component.type_name
                    ));
                }
                continue;
            }
            match SecretStore::open(component) {
                Ok(store) => opened.push(Ok(store)),
                Err(message) if component.ignore_errors => {
                    self.warnings.push(format!(
                        "secret store {:?} in {}: {message}; left out because ignoreErrors is set",
                        component.name,
                        component.source.display()
                    ));
                    self.left_out
                        .push((component.name.clone(), component.source.clone()));
                    opened.push(Err(format!(
                        "it did not load ({message}) and was left out because ignoreErrors is set"
                    )));
                }
                Err(message) => {
                    errors.push(ManifestError {
                        file: component.source.clone(),
                        component: Some(component.name.clone()),
                        message: format!("secret store {}: {message}", component.type_name),
                    });
                    opened.push(Err(format!("it did not load ({message})")));
                }
            }
        }
        opened
    }

    fn resolve_secret_refs(
        &mut self,
        stores: &[Result<SecretStore, String>],
        cx: LoadContext<'_>,
        errors: &mut Vec<ManifestError>,
    ) {
        let mut failed: Vec<(String, PathBuf, String)> = Vec::new();
        for secret_ref in std::mem::take(&mut self.secret_refs) {
            let described = format!(
                "spec.metadata `{}`: secretKeyRef {{name: {:?}, key: {:?}}}",
                secret_ref.field, secret_ref.name, secret_ref.key
            );
            let result = lookup(&self.secret_stores, stores, &secret_ref, cx)
                .and_then(|secret| {
                    // daprd expands the templates after it resolves secrets,
                    // in secret values too.
                    expand_templates(secret.expose(), secret_ref.namespace.as_deref(), cx)
                        .map(Secret::new)
                })
                .map_err(|message| format!("{described}: {message}"));
            let component = self.components.iter_mut().find(|component| {
                secret_ref.added
                    && component.name == secret_ref.component_name
                    && component.source == secret_ref.source
            });
            match (result, component) {
                (Ok(secret), Some(component)) => component
                    .metadata
                    .insert_secret(secret_ref.field.clone(), secret),
                (Ok(_), None) => {}
                (Err(message), Some(_)) => {
                    failed.push((secret_ref.component_name, secret_ref.source, message));
                }
                (Err(message), None) => errors.push(ManifestError {
                    file: secret_ref.source,
                    component: Some(secret_ref.component_name),
                    message,
                }),
            }
        }
        // A component whose secrets did not resolve fails like one whose
        // store does not start: left out under ignoreErrors, refused
        // otherwise.
        for (name, source, message) in failed {
            let ignore_errors = self
                .components
                .iter()
                .any(|c| c.name == name && c.source == source && c.ignore_errors);
            if ignore_errors {
                self.warnings.push(format!(
                    "component {name:?} in {}: {message}; left out because ignoreErrors is set",
                    source.display()
                ));
                self.components
                    .retain(|c| !(c.name == name && c.source == source));
                if !self.left_out.contains(&(name.clone(), source.clone())) {
                    self.left_out.push((name, source));
                }
            } else {
                errors.push(ManifestError {
                    file: source,
                    component: Some(name),
                    message,
                });
            }
        }
    }
}

/// Read one `secretKeyRef`, with daprd's choice of store: `auth.secretStore`,
/// which has no default outside Kubernetes.
fn lookup(
    declared: &[SecretStoreComponent],
    stores: &[Result<SecretStore, String>],
    secret_ref: &SecretRef,
    cx: LoadContext<'_>,
) -> Result<Secret, String> {
    let store_name = secret_ref.store.as_str();
    if store_name.is_empty() {
        return Err(
            "auth.secretStore is not set: daprd reads secretKeyRef through the store it names (in Kubernetes mode its default is `kubernetes`, which leasehold does not have; in standalone mode there is none and the component never loads); name a secretstores.local.file or secretstores.local.env component there"
                .to_owned(),
        );
    }
    let Some(index) = declared.iter().position(|s| s.name == store_name) else {
        if store_name == "kubernetes" {
            return Err(
                "secret store \"kubernetes\" is daprd's built-in Kubernetes secret store, which leasehold does not have; it reads secrets through secretstores.local.file and secretstores.local.env components"
                    .to_owned(),
            );
        }
        return Err(format!(
            "there is no secret store component named {store_name:?} for this app in the resources paths"
        ));
    };
    let component = &declared[index];
    let store = stores[index].as_ref().map_err(|why| {
        format!(
            "secret store {store_name:?} ({}, in {}): {why}",
            component.type_name,
            component.source.display()
        )
    })?;
    store
        .lookup(&secret_ref.name, &secret_ref.key, cx.env)
        .map_err(|err| {
            format!(
                "secret store {store_name:?} ({}): {err}",
                component.type_name
            )
        })
}

/// The context a manifest is resolved in.
#[derive(Debug, Clone, Copy)]
pub struct LoadContext<'a> {
    /// The sidecar's app id (for `scopes`, `{appID}`, `{namespace}`).
    pub app_id: &'a str,
    /// Where `envRef`s, `secretstores.local.env` secrets and `NAMESPACE` /
    /// `POD_NAME` are read.
    pub env: &'a dyn Env,
}

impl fmt::Debug for dyn Env + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env")
    }
}

/// Load every component file in `dirs`, then [`Loaded::resolve`] secrets.
/// Problems are collected in [`Loaded::errors`], never returned early.
///
/// [`Loaded::components`] holds the lock stores to serve;
/// [`Loaded::registered_components`] lists every component daprd would
/// list in `/v1.0/metadata`:
///
/// ```
/// use leasehold_core::manifest::{load_dirs, LoadContext, ProcessEnv};
///
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(
///     dir.path().join("c.yaml"),
///     "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\nspec: {type: state.redis, version: V1}\n",
/// )
/// .unwrap();
/// let loaded = load_dirs(&[dir.path().to_owned()], LoadContext { app_id: "app", env: &ProcessEnv });
/// assert!(loaded.errors.is_empty());
/// let listed: Vec<_> = loaded
///     .registered_components()
///     .map(|c| (c.name.as_str(), c.type_name.as_str(), c.version.as_str()))
///     .collect();
/// assert_eq!(listed, [("statestore", "state.redis", "V1")]);
/// ```
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
    loaded.resolve(cx, &mut errors);
    loaded.errors = errors;
    loaded
}

/// Parse the text of one file (possibly several documents) into `loaded`.
/// `secretKeyRef` values are filled in by [`Loaded::resolve`], after the
/// last file: a secret store may be declared in a later file.
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
        parse_document(&value, file, cx, loaded, errors);
    }
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

/// Whether a version selects daprd's first implementation of a type:
/// `v1`, `v0` or none, in any case (`IsInitialVersion` after `ToLower`).
fn is_initial_version(version: &str) -> bool {
    matches!(version.to_ascii_lowercase().as_str(), "" | "v0" | "v1")
}

fn parse_document(
    doc: &Value,
    file: &Path,
    cx: LoadContext<'_>,
    loaded: &mut Loaded,
    all_errors: &mut Vec<ManifestError>,
) {
    let api_version = field(doc, "apiVersion").and_then(Value::as_str);
    let kind = field(doc, "kind").and_then(Value::as_str);
    if api_version != Some("dapr.io/v1alpha1") || kind != Some("Component") {
        return;
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
            loaded.skipped.push(format!(
                "component {name:?} in {}: scoped to {scopes:?}, not to app {:?}",
                file.display(),
                cx.app_id
            ));
            return;
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
        loaded.skipped.push(format!(
            "component {name:?} in {}: namespace {theirs:?} is not {ours:?}",
            file.display()
        ));
        return;
    }

    let spec = field(doc, "spec");
    let type_as_written = spec
        .and_then(|s| field(s, "type"))
        .and_then(scalar_text)
        .unwrap_or_default();
    let type_name = type_as_written.to_ascii_lowercase();
    let version = spec
        .and_then(|s| field(s, "version"))
        .and_then(scalar_text)
        .unwrap_or_default();
    let category = if type_name.starts_with("lock.") {
        Category::LockStore
    } else if type_name.starts_with("secretstores.") {
        Category::SecretStore
    } else {
        Category::Other
    };
    loaded.documents.push(ComponentDocument {
        name: name.clone(),
        type_name: type_as_written,
        version: version.clone(),
        category,
        source: file.to_owned(),
    });
    if type_name.is_empty() {
        fail("spec.type is required".to_owned());
    } else if category == Category::Other {
        // Other building blocks (state, pubsub, ...) share resources folders
        // with lock stores; they are not ours to load.
        // Only listed; a problem in it is daprd's to report, not ours.
        loaded.skipped.push(format!(
            "component {name:?} in {}: type {type_name} is not a lock store",
            file.display()
        ));
        return;
    }
    let supported_secret_store =
        category == Category::SecretStore && SUPPORTED_TYPES.contains(&type_name.as_str());
    if category == Category::LockStore && !is_initial_version(&version) {
        fail(format!(
            "couldn't find lock store {type_name}/{version}: only versions v1, v0 or none exist"
        ));
    } else if supported_secret_store && !is_initial_version(&version) {
        fail(format!(
            "couldn't find secret store {type_name}/{version}: only versions v1, v0 or none exist"
        ));
    }

    // daprd falls back to its default when the timeout is not a duration
    // above zero; say so, since the file probably meant something else.
    let init_timeout = match spec
        .and_then(|s| field(s, "initTimeout"))
        .and_then(scalar_text)
    {
        None => None,
        Some(raw) if raw.is_empty() => None,
        Some(raw) => match parse_go_duration(&raw) {
            Ok(timeout) if !timeout.is_zero() => Some(timeout),
            Ok(_) | Err(_) => {
                loaded.warnings.push(format!(
                    "component {name:?} in {}: spec.initTimeout {raw:?} is not a duration above zero; daprd's default of {}s applies",
                    file.display(),
                    DEFAULT_INIT_TIMEOUT.as_secs()
                ));
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
    let secret_store = field(doc, "auth")
        .and_then(|auth| field(auth, "secretStore"))
        .and_then(scalar_text)
        .unwrap_or_default();

    let mut metadata = Metadata::default();
    let mut secret_refs = Vec::new();
    let items = spec.and_then(|s| field(s, "metadata"));
    match items {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            for (index, item) in items.iter().enumerate() {
                match resolve_item(item, index, namespace.as_deref(), cx) {
                    Ok((key, Item::Value(value))) => metadata.insert(key, value),
                    Ok((
                        key,
                        Item::Secret {
                            name: secret_name,
                            key: secret_key,
                        },
                    )) => {
                        if category == Category::SecretStore {
                            // Only reported for stores leasehold loads.
                            if supported_secret_store {
                                fail(format!(
                                    "spec.metadata `{key}`: a secret store's own metadata cannot use secretKeyRef in leasehold; use a value or envRef"
                                ));
                            }
                        } else {
                            secret_refs.push(SecretRef {
                                component_name: name.clone(),
                                source: file.to_owned(),
                                added: true,
                                field: key,
                                store: secret_store.clone(),
                                name: secret_name,
                                key: secret_key,
                                namespace: namespace.clone(),
                            });
                        }
                    }
                    Err(message) => fail(message),
                }
            }
        }
        Some(_) => fail("spec.metadata must be a list of {name, value} entries".to_owned()),
    }

    if category == Category::SecretStore && !supported_secret_store {
        // Only its name and type matter until a lock store needs it.
        errors.clear();
    }
    if !errors.is_empty() {
        all_errors.append(&mut errors);
        for mut secret_ref in secret_refs {
            secret_ref.added = false;
            loaded.secret_refs.push(secret_ref);
        }
        return;
    }
    match category {
        Category::SecretStore => loaded.secret_stores.push(SecretStoreComponent {
            name,
            type_name,
            version,
            ignore_errors,
            metadata,
            source: file.to_owned(),
        }),
        _ => {
            loaded.secret_refs.append(&mut secret_refs);
            loaded.components.push(Component {
                name,
                type_name,
                version,
                init_timeout,
                ignore_errors,
                metadata,
                source: file.to_owned(),
            });
        }
    }
}

/// One metadata item: a value, or a reference into a secret store.
enum Item {
    Value(String),
    Secret { name: String, key: String },
}

/// daprd's order (`ProcessResource`): with no value, an `envRef` is read;
/// otherwise a `secretKeyRef` with a name replaces the value; otherwise the
/// value stands.
fn resolve_item(
    item: &Value,
    index: usize,
    namespace: Option<&str>,
    cx: LoadContext<'_>,
) -> Result<(String, Item), String> {
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
    let env_ref = field(item, "envRef")
        .and_then(scalar_text)
        .filter(|v| !v.is_empty());
    let value = if let (true, Some(var)) = (raw.is_empty(), env_ref) {
        if REFUSED_ENV_REFS
            .iter()
            .any(|refused| refused.eq_ignore_ascii_case(&var))
        {
            return Err(format!(
                "spec.metadata `{key}`: envRef may not read {var}, which holds the sidecar's own credentials"
            ));
        }
        cx.env.var(&var).unwrap_or_default()
    } else if let Some(reference) = field(item, "secretKeyRef").filter(|r| !r.is_null()) {
        if reference.as_mapping().is_none() {
            return Err(format!(
                "spec.metadata `{key}`: secretKeyRef must be a mapping with name and key"
            ));
        }
        let part = |part: &str| {
            field(reference, part)
                .map(|value| {
                    scalar_text(value).ok_or_else(|| {
                        format!("spec.metadata `{key}`: secretKeyRef.{part} must be a string")
                    })
                })
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let name = part("name")?;
        let secret_key = part("key")?;
        if name.is_empty() {
            // daprd passes over a reference without a name.
            raw
        } else {
            let secret_key = if secret_key.is_empty() {
                name.clone()
            } else {
                secret_key
            };
            return Ok((
                key,
                Item::Secret {
                    name,
                    key: secret_key,
                },
            ));
        }
    } else {
        raw
    };
    let value = expand_templates(&value, namespace, cx)
        .map_err(|err| format!("spec.metadata `{key}`: {err}"))?;
    Ok((key, Item::Value(value)))
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

/// daprd refuses a second component of any type with a name already taken.
fn check_duplicates(documents: &[ComponentDocument], errors: &mut Vec<ManifestError>) {
    for (index, document) in documents.iter().enumerate() {
        if document.name.is_empty() {
            continue;
        }
        if let Some(first) = documents[..index].iter().find(|d| d.name == document.name) {
            errors.push(ManifestError {
                file: document.source.clone(),
                component: Some(document.name.clone()),
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
        loaded.resolve(cx, &mut errors);
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
            "spec.metadata[0].name is required",
            "may not read DAPR_API_TOKEN",
            "component \"a\": spec.metadata `s`: secretKeyRef {name: \"x\", key: \"x\"}: auth.secretStore is not set",
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

    #[test]
    fn versions_compare_lower_cased_and_stay_as_written() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: a}\nspec: {type: lock.in-memory, version: V1}\n";
        let loaded = parse(text, &env(&[]), "app").unwrap();
        assert_eq!(loaded.components[0].version, "V1");
        for ok in ["v0", "V0", "v1", "\"\""] {
            let text = text.replace("V1", ok);
            assert!(parse(&text, &env(&[]), "app").is_ok(), "{ok}");
        }
        let errors = parse(&text.replace("V1", "V2"), &env(&[]), "app").unwrap_err();
        assert!(
            errors[0].message.contains("lock.in-memory/V2"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_bad_init_timeout_falls_back_to_the_default_with_a_warning() {
        let text = |timeout: &str| {
            format!(
                "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: a}}\nspec: {{type: lock.in-memory, initTimeout: '{timeout}'}}\n"
            )
        };
        for (timeout, expected, warned) in [
            ("10s", Some(Duration::from_secs(10)), false),
            ("1m30s", Some(Duration::from_secs(90)), false),
            ("", None, false),
            ("soon", None, true),
            ("5", None, true),
            ("0", None, true),
            ("0s", None, true),
            ("-1s", None, true),
        ] {
            let loaded = parse(&text(timeout), &env(&[]), "app").unwrap();
            assert_eq!(loaded.components[0].init_timeout, expected, "{timeout:?}");
            assert_eq!(
                !loaded.warnings.is_empty(),
                warned,
                "{timeout:?}: {:?}",
                loaded.warnings
            );
            if warned {
                assert!(
                    loaded.warnings[0].contains("default of 5s"),
                    "{:?}",
                    loaded.warnings
                );
            }
        }
    }

    #[test]
    fn every_component_document_is_listed_as_written() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: locks}\nspec: {type: lock.Redis, version: V1, metadata: [{name: redisHost, value: 'h:1'}]}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: secrets}\nspec: {type: secretstores.local.env}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: vault}\nspec: {type: secretstores.hashicorp.vault, version: v1}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: state}\nspec: {type: state.redis, version: v2}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: theirs}\nspec: {type: state.redis}\nscopes: [other]\n---\napiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: config}\n";
        let loaded = parse(text, &env(&[]), "app").unwrap();
        let listed: Vec<_> = loaded
            .registered_components()
            .map(|d| {
                (
                    d.name.as_str(),
                    d.type_name.as_str(),
                    d.version.as_str(),
                    d.category,
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("locks", "lock.Redis", "V1", Category::LockStore),
                (
                    "secrets",
                    "secretstores.local.env",
                    "",
                    Category::SecretStore
                ),
                (
                    "vault",
                    "secretstores.hashicorp.vault",
                    "v1",
                    Category::SecretStore
                ),
                ("state", "state.redis", "v2", Category::Other),
            ]
        );
        assert_eq!(loaded.components.len(), 1);
        assert_eq!(loaded.secret_stores.len(), 2);
        // The unused Vault store is noted, not refused.
        assert!(
            loaded
                .skipped
                .iter()
                .any(|note| note.contains("\"vault\"") && note.contains("no lock store uses it")),
            "{:?}",
            loaded.skipped
        );
    }

    #[test]
    fn names_are_unique_across_every_type() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x}\nspec: {type: lock.in-memory}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: x}\nspec: {type: secretstores.local.env}\n";
        let errors = parse(text, &env(&[]), "app").unwrap_err();
        assert!(
            errors[0].message.contains("duplicate component name"),
            "{errors:?}"
        );
    }

    /// A resources directory with `files`, loaded with `env`.
    fn load(files: &[(&str, &str)], env: &HashMap<String, String>) -> (Loaded, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let loaded = load_dirs(&[dir.path().to_owned()], LoadContext { app_id: "app", env });
        (loaded, dir)
    }

    fn lock_using(store: &str, items: &str) -> String {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: locks, namespace: prod}}\nspec:\n  type: lock.redis\n  metadata:\n{items}auth:\n  secretStore: {store}\n"
        )
    }

    fn file_store(name: &str, path: &Path, extra: &str) -> String {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {{name: {name}}}\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: {}\n{extra}",
            path.display()
        )
    }

    fn messages(loaded: &Loaded) -> String {
        loaded
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn secret_key_refs_resolve_through_a_file_store_declared_in_any_file() {
        let secrets = tempfile::tempdir().unwrap();
        let path = secrets.path().join("secrets.json");
        std::fs::write(
            &path,
            r#"{"redis": {"password": "hunter2-{appID}", "user": "u"}, "host": "h:1"}"#,
        )
        .unwrap();
        let items = "  - name: redisHost\n    value: ignored\n    secretKeyRef: {name: host}\n  - name: redisPassword\n    secretKeyRef:\n      name: redis:password\n      key: redis:password\n  - name: redisUsername\n    secretKeyRef: {name: '', key: x}\n    value: plain-user\n  - name: redisDB\n    envRef: REDIS_DB\n    secretKeyRef: {name: host}\n";
        // The lock store comes first; the store it uses is in a later file.
        let (loaded, _dir) = load(
            &[
                ("a-locks.yaml", &lock_using("local", items)),
                ("b-secrets.yaml", &file_store("local", &path, "")),
            ],
            &env(&[("REDIS_DB", "3")]),
        );
        assert!(loaded.errors.is_empty(), "{}", messages(&loaded));
        let md = &loaded.components[0].metadata;
        // A secret replaces the value, as in daprd.
        assert_eq!(md.get("redisHost"), Some("h:1"));
        // Templates are expanded in secret values too, as in daprd.
        assert_eq!(md.get("redisPassword"), Some("hunter2-app"));
        assert!(md.is_secret("redisPassword"));
        // A reference without a name is passed over; envRef comes first.
        assert_eq!(md.get("redisUsername"), Some("plain-user"));
        assert!(!md.is_secret("redisUsername"));
        assert_eq!(md.get("redisDB"), Some("3"));
        let values: Vec<_> = loaded.secret_values().map(Secret::expose).collect();
        assert_eq!(values, ["h:1", "hunter2-app"]);
        // No value reaches Debug output.
        assert!(!format!("{loaded:?}").contains("hunter2"));

        // multiValued: keys of a top-level object.
        let items = "  - name: redisPassword\n    secretKeyRef: {name: redis, key: password}\n";
        let (loaded, _dir) = load(
            &[
                ("locks.yaml", &lock_using("local", items)),
                (
                    "secrets.yaml",
                    &file_store(
                        "local",
                        &path,
                        "  - name: multiValued\n    value: \"true\"\n",
                    ),
                ),
            ],
            &env(&[]),
        );
        assert!(loaded.errors.is_empty(), "{}", messages(&loaded));
        assert_eq!(
            loaded.components[0].metadata.get("redisPassword"),
            Some("hunter2-app")
        );
    }

    #[test]
    fn secret_key_refs_resolve_through_an_env_store() {
        let store = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: envs}\nspec:\n  type: secretstores.local.env\n  metadata:\n  - {name: prefix, value: LOCKS_}\n";
        let items = "  - name: redisPassword\n    secretKeyRef: {name: REDIS_PASSWORD}\n";
        // `auth: secretstore:` as the Dapr docs write it works too.
        let lock = lock_using("envs", items).replace("secretStore", "secretstore");
        let (loaded, _dir) = load(
            &[("locks.yaml", &lock), ("store.yaml", store)],
            &env(&[("LOCKS_REDIS_PASSWORD", "from-env")]),
        );
        assert!(loaded.errors.is_empty(), "{}", messages(&loaded));
        assert_eq!(
            loaded.components[0].metadata.get("redisPassword"),
            Some("from-env")
        );
        assert!(loaded.components[0].metadata.is_secret("redisPassword"));
    }

    #[test]
    fn unresolved_secrets_name_the_component_field_store_and_key() {
        let secrets = tempfile::tempdir().unwrap();
        let path = secrets.path().join("secrets.json");
        std::fs::write(&path, r#"{"present": "x"}"#).unwrap();
        let vault = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: vault}\nspec: {type: secretstores.hashicorp.vault, version: v1, metadata: [{name: vaultAddr, value: 'http://v'}]}\n";
        let item =
            |name: &str| format!("  - name: {name}\n    secretKeyRef: {{name: missing, key: k}}\n");
        let cases: [(&str, String, &[&str]); 5] = [
            (
                "local",
                item("redisPassword"),
                &[
                    "component \"locks\"",
                    "spec.metadata `redisPassword`",
                    "secret store \"local\" (secretstores.local.file)",
                    "no secret \"missing\"",
                ],
            ),
            (
                "vault",
                item("redisPassword"),
                &[
                    "secret store \"vault\" (secretstores.hashicorp.vault",
                    "leasehold does not have",
                    "secretstores.local.file and secretstores.local.env",
                ],
            ),
            (
                "kubernetes",
                item("redisPassword"),
                &["built-in Kubernetes secret store"],
            ),
            (
                "elsewhere",
                item("redisPassword"),
                &["no secret store component named \"elsewhere\""],
            ),
            (
                "local",
                "  - name: redisPassword\n    secretKeyRef: {name: present, key: k}\n".to_owned(),
                &["key \"k\" does not exist"],
            ),
        ];
        for (store, items, needles) in cases {
            let (loaded, _dir) = load(
                &[
                    ("locks.yaml", &lock_using(store, &items)),
                    ("local.yaml", &file_store("local", &path, "")),
                    ("vault.yaml", vault),
                ],
                &env(&[]),
            );
            let text = messages(&loaded);
            assert_eq!(loaded.errors.len(), 1, "{store}: {text}");
            for needle in needles {
                assert!(
                    text.contains(needle),
                    "{store}: missing {needle:?} in {text}"
                );
            }
        }
    }

    #[test]
    fn ignore_errors_leaves_out_a_component_whose_secrets_do_not_resolve() {
        let items = "  - name: redisPassword\n    secretKeyRef: {name: NOPE}\n";
        let lock = lock_using("envs", items).replace(
            "  type: lock.redis\n",
            "  type: lock.redis\n  ignoreErrors: true\n",
        );
        let store = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: envs}\nspec: {type: secretstores.local.env}\n";
        let (loaded, _dir) = load(&[("locks.yaml", &lock), ("store.yaml", store)], &env(&[]));
        assert!(loaded.errors.is_empty(), "{}", messages(&loaded));
        assert!(loaded.components.is_empty());
        assert!(
            loaded.warnings[0].contains("left out because ignoreErrors is set"),
            "{:?}",
            loaded.warnings
        );
        let listed: Vec<_> = loaded
            .registered_components()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(listed, ["envs"]);
    }

    #[test]
    fn a_file_store_that_does_not_load_is_refused_unless_ignore_errors() {
        let missing = Path::new("/nonexistent/leasehold/secrets.json");
        let (loaded, _dir) = load(&[("s.yaml", &file_store("local", missing, ""))], &env(&[]));
        let text = messages(&loaded);
        assert!(text.contains("component \"local\": secret store secretstores.local.file: metadata `secretsFile`: cannot read /nonexistent/leasehold/secrets.json"), "{text}");

        let ignored = file_store("local", missing, "")
            .replace("  version: v1\n", "  version: v1\n  ignoreErrors: true\n");
        let items = "  - name: redisPassword\n    secretKeyRef: {name: pw}\n";
        let (loaded, _dir) = load(
            &[
                ("s.yaml", &ignored),
                ("l.yaml", &lock_using("local", items)),
            ],
            &env(&[]),
        );
        let text = messages(&loaded);
        assert_eq!(loaded.errors.len(), 1, "{text}");
        assert!(
            text.contains("was left out because ignoreErrors is set"),
            "{text}"
        );
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("secret store \"local\"")),
            "{:?}",
            loaded.warnings
        );

        let bad_version = file_store("local", missing, "").replace("version: v1", "version: v2");
        let (loaded, _dir) = load(&[("s.yaml", &bad_version)], &env(&[]));
        assert!(
            messages(&loaded).contains("couldn't find secret store secretstores.local.file/v2")
        );
    }

    #[test]
    fn a_secret_store_cannot_take_its_own_metadata_from_a_secret_store() {
        let text = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: s}\nspec:\n  type: secretstores.local.file\n  metadata:\n  - name: secretsFile\n    secretKeyRef: {name: other}\n";
        let errors = parse(text, &env(&[]), "app").unwrap_err();
        assert!(
            errors[0].message.contains("cannot use secretKeyRef"),
            "{errors:?}"
        );
    }
}
