//! RESP2, the Redis wire format, as far as this store speaks it: commands
//! are arrays of bulk strings; replies are the five RESP2 types.
//!
//! The parser works on a buffer that may end mid-reply (a reply split across
//! reads): it reports how much it consumed, or that it needs more bytes, and
//! never consumes half a reply.

/// A reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A null bulk string or null array (`$-1`, `*-1`).
    Nil,
    /// `:<n>`
    Int(i64),
    /// `$<len>` bulk string.
    Bulk(Vec<u8>),
    /// `+<text>` simple string (`OK`, `PONG`).
    Status(String),
    /// `-<text>` error: the command was refused or failed.
    Error(String),
    /// `*<n>` array.
    Array(Vec<Reply>),
}

/// Builds one command: `*<n>` then each argument as a bulk string.
#[derive(Debug, Clone, Default)]
pub(crate) struct Command {
    args: Vec<Vec<u8>>,
}

impl Command {
    pub(crate) fn new(name: &str) -> Self {
        Command {
            args: vec![name.as_bytes().to_vec()],
        }
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<[u8]>) -> Self {
        self.args.push(arg.as_ref().to_vec());
        self
    }

    pub(crate) fn args<A: AsRef<[u8]>>(mut self, args: &[A]) -> Self {
        self.args
            .extend(args.iter().map(|arg| arg.as_ref().to_vec()));
        self
    }

    /// The wire bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into(&mut out, &self.args);
        out
    }
}

/// Append the wire form of a command made of `args` to `out`.
pub(crate) fn encode_into<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    let size: usize = args.iter().map(|arg| arg.as_ref().len() + 16).sum();
    out.reserve(size + 16);
    header(out, b'*', args.len());
    for arg in args {
        bulk(out, arg.as_ref());
    }
}

/// Append one argument: `$<len>\r\n<bytes>\r\n`.
pub(crate) fn bulk(out: &mut Vec<u8>, arg: &[u8]) {
    header(out, b'$', arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

/// `<kind><n>\r\n`, without going through the formatting machinery (this
/// runs several times per command).
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(kind);
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// Why a buffer does not start with a reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// The reply is not complete yet: read more.
    Incomplete,
    /// Not RESP: the connection cannot be trusted any more.
    Invalid(String),
}

/// Longer bulk strings are refused as corrupt: Redis's own limit
/// (`proto-max-bulk-len`) is 512 MiB.
const MAX_BULK: i64 = 512 * 1024 * 1024;

/// Arrays longer than this are refused as corrupt.
const MAX_ELEMENTS: i64 = i32::MAX as i64;

/// Nesting deeper than this is refused: no reply of this store nests more
/// than twice, and a bound keeps a corrupt stream from exhausting the stack.
const MAX_DEPTH: usize = 16;

/// Parse one reply from the start of `buf`: the reply and the bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<(Reply, usize), ParseError> {
    let mut at = 0;
    let reply = parse_at(buf, &mut at, 0)?;
    Ok((reply, at))
}

fn parse_at(buf: &[u8], at: &mut usize, depth: usize) -> Result<Reply, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError::Invalid("replies nest too deeply".to_owned()));
    }
    let kind = *buf.get(*at).ok_or(ParseError::Incomplete)?;
    if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(ParseError::Invalid(format!(
            "unexpected reply type byte 0x{kind:02x}"
        )));
    }
    *at += 1;
    let line = line(buf, at)?;
    match kind {
        b'+' => Ok(Reply::Status(text(line))),
        b'-' => Ok(Reply::Error(text(line))),
        b':' => Ok(Reply::Int(number(line)?)),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            if len > MAX_BULK {
                return Err(ParseError::Invalid(format!("a bulk string of {len} bytes")));
            }
            let len = usize::try_from(len)
                .map_err(|_| ParseError::Invalid("bulk length out of range".to_owned()))?;
            let end = at.checked_add(len).ok_or(ParseError::Incomplete)?;
            if buf.len() < end + 2 {
                return Err(ParseError::Incomplete);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ParseError::Invalid(
                    "bulk string not followed by CRLF".to_owned(),
                ));
            }
            let bytes = buf[*at..end].to_vec();
            *at = end + 2;
            Ok(Reply::Bulk(bytes))
        }
        b'*' => {
            let count = number(line)?;
            if count < 0 {
                return Ok(Reply::Nil);
            }
            if count > MAX_ELEMENTS {
                return Err(ParseError::Invalid(format!("an array of {count} elements")));
            }
            // Each element takes at least 3 bytes: a count beyond what the
            // buffer could hold means more must be read (or a corrupt
            // stream, which the next bytes will show).
            let count = usize::try_from(count)
                .map_err(|_| ParseError::Invalid("array length out of range".to_owned()))?;
            let mut items = Vec::with_capacity(count.min(buf.len() / 3 + 1));
            for _ in 0..count {
                items.push(parse_at(buf, at, depth + 1)?);
            }
            Ok(Reply::Array(items))
        }
        _ => unreachable!("the type byte was checked above"),
    }
}

/// The bytes up to the next CRLF, which is consumed.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<&'a [u8], ParseError> {
    let rest = &buf[*at..];
    let end = rest
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .ok_or(ParseError::Incomplete)?;
    *at += end + 2;
    Ok(&rest[..end])
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).into_owned()
}

fn number(line: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| ParseError::Invalid("a length or integer is not a number".to_owned()))
}

/// A reply converted into what a caller expects; the error says what did
/// not fit.
pub(crate) trait FromReply: Sized {
    fn from_reply(reply: Reply) -> Result<Self, String>;
}

impl FromReply for Reply {
    fn from_reply(reply: Reply) -> Result<Self, String> {
        Ok(reply)
    }
}

impl FromReply for i64 {
    fn from_reply(reply: Reply) -> Result<Self, String> {
        match reply {
            Reply::Int(n) => Ok(n),
            // SCAN's cursor comes as a bulk string.
            Reply::Bulk(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| "a bulk string that is not an integer".to_owned()),
            other => Err(format!("expected an integer, got {}", kind(&other))),
        }
    }
}

/// Narrower integers: the reply's integer, if it fits.
macro_rules! narrow_from_reply {
    ($($ty:ty),+) => {$(
        impl FromReply for $ty {
            fn from_reply(reply: Reply) -> Result<Self, String> {
                let n = i64::from_reply(reply)?;
                <$ty>::try_from(n).map_err(|_| format!("{n} is out of range"))
            }
        }
    )+};
}

narrow_from_reply!(u64, u32, u16);

impl FromReply for String {
    fn from_reply(reply: Reply) -> Result<Self, String> {
        match reply {
            Reply::Bulk(bytes) => {
                String::from_utf8(bytes).map_err(|_| "a bulk string that is not UTF-8".to_owned())
            }
            Reply::Status(text) => Ok(text),
            other => Err(format!("expected a string, got {}", kind(&other))),
        }
    }
}

impl<T: FromReply> FromReply for Option<T> {
    fn from_reply(reply: Reply) -> Result<Self, String> {
        match reply {
            Reply::Nil => Ok(None),
            other => T::from_reply(other).map(Some),
        }
    }
}

impl<T: FromReply> FromReply for Vec<T> {
    fn from_reply(reply: Reply) -> Result<Self, String> {
        match reply {
            Reply::Array(items) => items.into_iter().map(T::from_reply).collect(),
            Reply::Nil => Ok(Vec::new()),
            other => Err(format!("expected an array, got {}", kind(&other))),
        }
    }
}

/// Tuples from arrays of exactly their length.
macro_rules! tuple_from_reply {
    ($len:expr; $($name:ident),+) => {
        impl<$($name: FromReply),+> FromReply for ($($name,)+) {
            fn from_reply(reply: Reply) -> Result<Self, String> {
                match reply {
                    Reply::Array(items) if items.len() == $len => {
                        let mut items = items.into_iter();
                        Ok(($($name::from_reply(items.next().expect("length checked"))?,)+))
                    }
                    other => Err(format!(
                        "expected an array of {}, got {}",
                        $len,
                        kind(&other)
                    )),
                }
            }
        }
    };
}

tuple_from_reply!(2; A, B);
tuple_from_reply!(4; A, B, C, D);

fn kind(reply: &Reply) -> String {
    match reply {
        Reply::Nil => "nil".to_owned(),
        Reply::Int(_) => "an integer".to_owned(),
        Reply::Bulk(_) => "a bulk string".to_owned(),
        Reply::Status(_) => "a status".to_owned(),
        Reply::Error(_) => "an error".to_owned(),
        Reply::Array(items) => format!("an array of {}", items.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let wire = Command::new("SET")
            .arg("k")
            .arg("")
            .args(&["PX", "10"])
            .encode();
        assert_eq!(
            wire,
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nPX\r\n$2\r\n10\r\n"
        );
    }

    #[test]
    fn every_reply_type_parses() {
        let wire = b"*6\r\n+OK\r\n-ERR no\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n*-1\r\n";
        let (reply, used) = parse(wire).unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Status("OK".into()),
                Reply::Error("ERR no".into()),
                Reply::Int(-7),
                Reply::Bulk(b"a\r\n".to_vec()),
                Reply::Nil,
                Reply::Nil,
            ])
        );
    }

    #[test]
    fn a_reply_cut_anywhere_is_incomplete_and_two_replies_parse_one_at_a_time() {
        let wire = b"*2\r\n:1\r\n$5\r\nhello\r\n:2\r\n";
        let first = wire.len() - 4;
        for cut in 0..first {
            assert_eq!(
                parse(&wire[..cut]),
                Err(ParseError::Incomplete),
                "cut {cut}"
            );
        }
        let (_, used) = parse(wire).unwrap();
        assert_eq!(used, first);
        assert_eq!(parse(&wire[used..]).unwrap(), (Reply::Int(2), 4));
    }

    #[test]
    fn garbage_is_invalid_not_incomplete() {
        assert!(matches!(parse(b"?x\r\n"), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse(b"?no line end"),
            Err(ParseError::Invalid(_))
        ));
        let huge = format!("${}\r\n", MAX_BULK + 1);
        assert!(matches!(
            parse(huge.as_bytes()),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(parse(b":x\r\n"), Err(ParseError::Invalid(_))));
        assert!(matches!(
            parse(b"$1\r\nab\r\n"),
            Err(ParseError::Invalid(_))
        ));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn conversions() {
        let pair = Reply::Array(vec![Reply::Int(1), Reply::Int(9)]);
        assert_eq!(<(i64, i64)>::from_reply(pair).unwrap(), (1, 9));
        assert_eq!(u64::from_reply(Reply::Bulk(b"42".to_vec())).unwrap(), 42);
        assert_eq!(
            Option::<(String, u16)>::from_reply(Reply::Nil).unwrap(),
            None
        );
        assert!(<(i64, i64)>::from_reply(Reply::Array(vec![Reply::Int(1)])).is_err());
        assert!(String::from_reply(Reply::Int(1)).is_err());
    }
}
