//! Key scoping: how a resource id becomes the key a store sees.
//!
//! daprd rewrites every resource id before it reaches the store, following
//! the component's `keyPrefix` metadata (`pkg/components/lock/lock_config.go`):
//!
//! | `keyPrefix` (lower-cased) | key |
//! |---|---|
//! | `appid` (default) | `lock||<appId>||<resourceId>`, or `lock||<resourceId>` with no app id |
//! | `name` | `lock||<storeName>||<resourceId>` |
//! | `none` | `lock||<resourceId>` |
//! | anything else | `lock||<value>||<resourceId>` |
//!
//! The same keys are used here, so that leasehold and daprd sidecars on one
//! Redis see each other's locks.

const SEPARATOR: &str = "||";

/// The fixed part of every key of one store, computed once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    prefix: String,
}

impl KeyScope {
    /// The scope for a store named `store_name` with `keyPrefix` metadata
    /// `strategy`, in the sidecar of `app_id`.
    pub fn new(strategy: Option<&str>, store_name: &str, app_id: &str) -> Result<Self, String> {
        let strategy = strategy.map(str::to_lowercase);
        let middle = match strategy.as_deref() {
            None | Some("appid") => (!app_id.is_empty()).then(|| app_id.to_owned()),
            Some("name") => Some(store_name.to_owned()),
            Some("none") => None,
            Some(custom) => {
                if custom.contains(SEPARATOR) {
                    return Err(format!(
                        "failed to save lock keyprefix: input key/keyPrefix '{custom}' can't contain '||'"
                    ));
                }
                Some(custom.to_owned())
            }
        };
        let prefix = match middle {
            Some(middle) => format!("lock{SEPARATOR}{middle}{SEPARATOR}"),
            None => format!("lock{SEPARATOR}"),
        };
        Ok(KeyScope { prefix })
    }

    /// The store key of `resource_id`, or daprd's message when the id holds
    /// the separator.
    pub fn key(&self, resource_id: &str) -> Result<String, String> {
        if resource_id.contains(SEPARATOR) {
            return Err(format!(
                "input key/keyPrefix '{resource_id}' can't contain '||'"
            ));
        }
        let mut key = String::with_capacity(self.prefix.len() + resource_id.len());
        key.push_str(&self.prefix);
        key.push_str(resource_id);
        Ok(key)
    }

    /// The fixed part (for listing this scope's keys).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The resource id back from a store key of this scope.
    pub fn resource_id<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vectors of daprd's own tests (lock_config_test.go, grpc_test.go).
    #[test]
    fn daprd_vectors() {
        let key = |strategy, store, app| {
            KeyScope::new(strategy, store, app)
                .unwrap()
                .key("lock-key-1234567")
                .unwrap()
        };
        assert_eq!(
            key(None, "store1", "appid1"),
            "lock||appid1||lock-key-1234567"
        );
        assert_eq!(
            key(Some("appid"), "store1", "appid1"),
            "lock||appid1||lock-key-1234567"
        );
        assert_eq!(
            key(Some("AppID"), "store1", "appid1"),
            "lock||appid1||lock-key-1234567"
        );
        assert_eq!(
            key(Some("name"), "store4", "appid1"),
            "lock||store4||lock-key-1234567"
        );
        assert_eq!(
            key(Some("none"), "store1", "appid1"),
            "lock||lock-key-1234567"
        );
        assert_eq!(
            key(Some("other-fixed-prefix"), "store1", "appid1"),
            "lock||other-fixed-prefix||lock-key-1234567"
        );
        // Custom prefixes are lower-cased, as in daprd.
        assert_eq!(
            key(Some("MixedCase"), "s", "a"),
            "lock||mixedcase||lock-key-1234567"
        );
        assert_eq!(
            KeyScope::new(None, "s", "")
                .unwrap()
                .key("resource")
                .unwrap(),
            "lock||resource"
        );
    }

    #[test]
    fn separators_are_refused() {
        let err = KeyScope::new(Some("a||b"), "s", "app").unwrap_err();
        assert_eq!(
            err,
            "failed to save lock keyprefix: input key/keyPrefix 'a||b' can't contain '||'"
        );
        let scope = KeyScope::new(None, "s", "app").unwrap();
        assert_eq!(
            scope.key("a||b").unwrap_err(),
            "input key/keyPrefix 'a||b' can't contain '||'"
        );
        // A single bar is fine.
        assert_eq!(scope.key("a|b").unwrap(), "lock||app||a|b");
        assert_eq!(scope.resource_id("lock||app||a|b"), Some("a|b"));
    }
}
