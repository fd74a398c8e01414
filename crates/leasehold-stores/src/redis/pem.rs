//! A structural check of PEM text, so that a certificate or key pasted
//! wrongly into the metadata is refused at start-up with the field's name
//! rather than at the first connection.
//!
//! It checks the markers, the base64 and the outer DER structure; deeper
//! checks are left to the TLS library. Messages never quote the text: a
//! private key must not end up in an error or a log line.

/// The labels of the private keys the TLS library reads: PKCS#8, PKCS#1
/// (RSA) and SEC1 (EC).
const KEY_LABELS: [&str; 3] = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

/// One `-----BEGIN <label>-----` ... `-----END <label>-----` block.
struct Block {
    label: String,
    der: Vec<u8>,
}

/// One or more certificates (a chain or a CA bundle). Blocks of other kinds
/// are refused: in a bundle they are most likely a key pasted by mistake.
pub(crate) fn certificates(text: &str) -> Result<usize, String> {
    let blocks = blocks(text)?;
    if blocks.is_empty() {
        return Err("holds no PEM block (expected -----BEGIN CERTIFICATE-----)".to_owned());
    }
    for (i, block) in blocks.iter().enumerate() {
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "PEM block {} is {:?}, not a CERTIFICATE",
                i + 1,
                block.label
            ));
        }
        der_sequence(&block.der).map_err(|why| format!("certificate {}: {why}", i + 1))?;
    }
    Ok(blocks.len())
}

/// Exactly one unencrypted private key.
pub(crate) fn private_key(text: &str) -> Result<(), String> {
    let blocks = blocks(text)?;
    let keys: Vec<&Block> = blocks
        .iter()
        .filter(|block| block.label.ends_with("PRIVATE KEY"))
        .collect();
    match keys.as_slice() {
        [] => Err("holds no PEM private key (expected -----BEGIN PRIVATE KEY-----)".to_owned()),
        [key] if key.label == "ENCRYPTED PRIVATE KEY" => {
            Err("is an encrypted private key; give the key without a passphrase".to_owned())
        }
        [key] if !KEY_LABELS.contains(&key.label.as_str()) => {
            Err(format!("is a {:?}, not one of {KEY_LABELS:?}", key.label))
        }
        [key] => der_sequence(&key.der),
        _ => Err(format!("holds {} private keys, expected one", keys.len())),
    }
}

fn blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for (n, line) in text.lines().map(str::trim).enumerate() {
        let line_no = n + 1;
        if let Some(label) = marker(line, "BEGIN") {
            if open.is_some() {
                return Err(format!(
                    "line {line_no}: a BEGIN marker inside another block"
                ));
            }
            open = Some((label.to_owned(), String::new()));
        } else if let Some(label) = marker(line, "END") {
            let Some((begun, body)) = open.take() else {
                return Err(format!("line {line_no}: an END marker without BEGIN"));
            };
            if begun != label {
                return Err(format!(
                    "line {line_no}: END {label:?} does not match BEGIN {begun:?}"
                ));
            }
            let der = base64(&body).map_err(|why| format!("the {begun} block: {why}"))?;
            blocks.push(Block { label: begun, der });
        } else if let Some((_, body)) = &mut open {
            // Headers (`Proc-Type: ...`) come with encrypted PKCS#1 keys.
            if line.contains(':') {
                return Err(format!(
                    "line {line_no}: PEM headers (an encrypted key?) are not supported"
                ));
            }
            body.push_str(line);
        }
        // Text outside blocks (openssl's "Bag Attributes", comments) is
        // ignored, as the TLS library ignores it.
    }
    if let Some((label, _)) = open {
        return Err(format!("the {label} block has no END marker"));
    }
    Ok(blocks)
}

fn marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_suffix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')
}

/// Standard base64 with optional padding; whitespace was removed by the
/// caller's line split.
fn base64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b' ' | b'\t' => continue,
            _ => return Err("is not valid base64".to_owned()),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // A lone leftover character carries fewer than 8 bits: truncated text.
    if bits >= 6 {
        return Err("is truncated base64".to_owned());
    }
    if out.is_empty() {
        return Err("is empty".to_owned());
    }
    Ok(out)
}

/// Certificates and keys are one DER SEQUENCE whose length covers exactly
/// the decoded bytes; anything else is a truncated or foreign paste.
fn der_sequence(der: &[u8]) -> Result<(), String> {
    let bad = || Err("is not a DER structure (truncated or damaged?)".to_owned());
    let [0x30, first, rest @ ..] = der else {
        return bad();
    };
    let (len, header) = if first & 0x80 == 0 {
        (usize::from(*first), 2)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return bad();
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, 2 + count)
    };
    if header + len != der.len() {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A tiny DER SEQUENCE (30 03 02 01 05), base64 "MAMCAQU=".
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAMCAQU=\n-----END PRIVATE KEY-----\n";

    #[test]
    fn accepts_certificates_and_keys() {
        assert_eq!(certificates(CERT), Ok(1));
        assert_eq!(certificates(&format!("# bundle\n{CERT}\n{CERT}")), Ok(2));
        assert_eq!(private_key(KEY), Ok(()));
        assert_eq!(private_key(&KEY.replace("PRIVATE", "EC PRIVATE")), Ok(()));
        // A key file that carries its certificate too.
        assert_eq!(private_key(&format!("{CERT}{KEY}")), Ok(()));
    }

    #[test]
    fn refuses_damaged_text_without_quoting_it() {
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0!\n-----END PRIVATE KEY-----";
        let err = private_key(secret).unwrap_err();
        assert!(err.contains("base64"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(
            certificates("not pem")
                .unwrap_err()
                .contains("no PEM block")
        );
        assert!(certificates(KEY).unwrap_err().contains("not a CERTIFICATE"));
        assert!(
            private_key(CERT)
                .unwrap_err()
                .contains("no PEM private key")
        );
        assert!(
            private_key(&KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"))
                .unwrap_err()
                .contains("encrypted")
        );
        assert!(
            certificates(&CERT.replace("MAMCAQU=", "MAMCAQ"))
                .unwrap_err()
                .contains("DER")
        );
        assert!(
            certificates("-----BEGIN CERTIFICATE-----\nMAMCAQU=\n")
                .unwrap_err()
                .contains("no END")
        );
        assert!(
            private_key(&format!("{KEY}{KEY}"))
                .unwrap_err()
                .contains("2 private keys")
        );
    }
}
