//! The Lua scripts: each store operation is one of them, so it runs
//! atomically on the Redis server and a dropped call never leaves half a
//! lock.
//!
//! Every script takes the same three keys:
//!
//! * `KEYS[1]`, the lock key exactly as daprd writes it: a string whose value
//!   is the owner, with a `PX` expiry. daprd's `SET k owner EX s NX` and its
//!   unlock script see leasehold's locks and the other way round.
//! * `KEYS[2]`, the fence hash of that lock key, which daprd never touches.
//!   Its fields: `token`, `owner` and `nonce` (the current leasehold grant;
//!   `owner` and `nonce` are removed when leasehold deletes the key),
//!   `released` (the nonce of the last unlock call that released the key)
//!   and `revoked` (the nonce of the last grant taken back, which is refused
//!   if it arrives after that). It outlives the lease by a minute (60000 ms in the scripts), long
//!   enough for any retry of a call, and then goes away, so a keyspace of
//!   short-lived keys does not grow.
//! * `KEYS[3]`, the token counter of the whole database
//!   ([`COUNTER_KEY`]): the last token handed out. It is never deleted, so
//!   tokens grow per key and across keys.
//!
//! The nonces make retries safe after a lost reply: the same call sent again
//! recognises its own earlier effect (see the reference page).

/// A script and its SHA-1, for `EVALSHA`.
#[derive(Debug)]
pub(crate) struct Lua {
    pub(crate) code: &'static str,
    pub(crate) sha: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Lua {
            code,
            sha: sha1_smol::Sha1::from(code).digest().to_string(),
        }
    }
}

/// The scripts, hashed once per store.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) acquire: Lua,
    pub(crate) release: Lua,
    pub(crate) renew: Lua,
    pub(crate) status: Lua,
    pub(crate) force: Lua,
    pub(crate) raise: Lua,
    pub(crate) take_back: Lua,
}

impl Scripts {
    /// Every script's code, for `SCRIPT LOAD` on each new connection.
    pub(crate) fn codes(&self) -> Vec<&'static str> {
        [
            &self.acquire,
            &self.release,
            &self.renew,
            &self.status,
            &self.force,
            &self.raise,
            &self.take_back,
        ]
        .iter()
        .map(|lua| lua.code)
        .collect()
    }

    pub(crate) fn new() -> Self {
        Scripts {
            acquire: Lua::new(ACQUIRE),
            release: Lua::new(RELEASE),
            renew: Lua::new(RENEW),
            status: Lua::new(STATUS),
            force: Lua::new(FORCE),
            raise: Lua::new(RAISE),
            take_back: Lua::new(TAKE_BACK),
        }
    }
}

/// ARGV: owner, lease in ms, call nonce.
/// Returns `{1, token}` when granted (now or by an earlier send of the same
/// call), `{0, 0}` when a live lease exists.
const ACQUIRE: &str = r#"
if redis.call('HGET', KEYS[2], 'revoked') == ARGV[3] then return {0, 0} end
local holder = redis.call('GET', KEYS[1])
if holder then
  if holder == ARGV[1] and redis.call('HGET', KEYS[2], 'nonce') == ARGV[3] then
    -- Rewritten so that this connection has a write after the grant in the
    -- replication stream, which a following WAIT then covers.
    redis.call('HSET', KEYS[2], 'nonce', ARGV[3])
    return {1, tonumber(redis.call('HGET', KEYS[2], 'token'))}
  end
  return {0, 0}
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], 'token', token, 'owner', ARGV[1], 'nonce', ARGV[3])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + 60000)
return {1, token}
"#;

/// ARGV: owner, call nonce, "1" when this is a retry, release channel, and
/// the token of the grant to release or "" for whichever the owner holds.
/// Returns daprd's codes: 1 released, -1 no lock, -2 another owner's lock
/// (or, with a token, another grant). A retry whose earlier send already
/// released the key returns 1 again.
const RELEASE: &str = r#"
if ARGV[3] == '1' and redis.call('HGET', KEYS[2], 'released') == ARGV[2] then
  return 1
end
local holder = redis.call('GET', KEYS[1])
if not holder then return -1 end
if holder ~= ARGV[1] then return -2 end
if ARGV[5] ~= '' and (redis.call('HGET', KEYS[2], 'owner') ~= holder
    or redis.call('HGET', KEYS[2], 'token') ~= ARGV[5]) then
  return -2
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], 'owner', 'nonce')
redis.call('HSET', KEYS[2], 'released', ARGV[2])
redis.call('PEXPIRE', KEYS[2], 60000)
redis.call('PUBLISH', ARGV[4], KEYS[1])
return 1
"#;

/// Give back a grant that must not stand (a quorum that failed, a write the
/// replicas did not acknowledge): only the grant made with this nonce.
/// Another lease of the same owner (an earlier grant, still valid) is left
/// alone; a plain unlock by owner would delete it. The nonce is recorded as
/// revoked first, so a send of the grant that is still on its way is
/// refused when it arrives.
/// ARGV: owner, the grant's nonce, release channel. Returns 1 when the
/// grant was found and removed, else 0.
const TAKE_BACK: &str = r#"
-- Should the grant still be on its way (sent on another connection), it is
-- refused when it arrives.
redis.call('HSET', KEYS[2], 'revoked', ARGV[2])
if redis.call('PTTL', KEYS[2]) < 60000 then
  redis.call('PEXPIRE', KEYS[2], 60000)
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'nonce') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], 'owner', 'nonce')
redis.call('PUBLISH', ARGV[3], KEYS[1])
return 1
"#;

/// ARGV: owner, lease in ms.
/// Returns `{1, token}` renewed, `{-1, 0}` no lock, `{-2, 0}` another owner's
/// lock. The token is 0 when the holder was granted by daprd.
const RENEW: &str = r#"
local holder = redis.call('GET', KEYS[1])
if not holder then return {-1, 0} end
if holder ~= ARGV[1] then return {-2, 0} end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) + 60000 then
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + 60000)
end
local token = 0
if redis.call('HGET', KEYS[2], 'owner') == holder then
  token = tonumber(redis.call('HGET', KEYS[2], 'token'))
end
return {1, token}
"#;

/// Returns `{owner, pttl, token, nonce}`, or `{}` when the key is free.
const STATUS: &str = r#"
local holder = redis.call('GET', KEYS[1])
if not holder then return {} end
local pttl = redis.call('PTTL', KEYS[1])
local token = 0
local nonce = ''
if redis.call('HGET', KEYS[2], 'owner') == holder then
  token = tonumber(redis.call('HGET', KEYS[2], 'token'))
  nonce = redis.call('HGET', KEYS[2], 'nonce')
end
return {holder, pttl, token, nonce}
"#;

/// ARGV: release channel. Returns `{owner, token}` of the evicted lease, or
/// `{}` when the key was free. The counter is left alone, so the next grant
/// gets a greater token.
const FORCE: &str = r#"
local holder = redis.call('GET', KEYS[1])
if not holder then return {} end
local token = 0
if redis.call('HGET', KEYS[2], 'owner') == holder then
  token = tonumber(redis.call('HGET', KEYS[2], 'token'))
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], 'owner', 'nonce')
redis.call('PUBLISH', ARGV[1], KEYS[1])
return {holder, token}
"#;

/// Quorum mode: after a majority granted a lease, every master's counter is
/// raised to the token chosen (the largest one granted), and the grant's own
/// record takes that token where the grant is present.
/// ARGV: token, call nonce. Returns 1.
const RAISE: &str = r#"
local wanted = tonumber(ARGV[1])
local counter = tonumber(redis.call('GET', KEYS[3]) or '0')
if counter < wanted then
  redis.call('SET', KEYS[3], ARGV[1])
end
if redis.call('HGET', KEYS[2], 'nonce') == ARGV[2] then
  redis.call('HSET', KEYS[2], 'token', ARGV[1])
end
return 1
"#;

/// The fence hash that goes with a lock key. daprd's keys start with the app
/// id or `lock||`, never with this prefix.
pub(crate) fn fence_key(key: &str) -> String {
    format!("leasehold-fence||{key}")
}

/// The token counter. It holds no `||`, so it is never a fence hash, and
/// daprd's keys (`<appId>||<resourceId>` or `lock||...`) always do unless
/// `keyPrefix: none` is used with this very resource id.
pub(crate) const COUNTER_KEY: &str = "leasehold-fence-counter";

/// The prefix of every fence hash, so that listing can leave them out.
pub(crate) const FENCE_PREFIX: &str = "leasehold-fence||";
