//! A throw-away certificate authority for TLS tests, made with the
//! `openssl` command: P-256 keys, two-day certificates, and the X.509 v3
//! extensions rustls requires (a CA with `basicConstraints`, leaves with
//! key usages and, for servers, the loopback address as the only subject
//! name, so that a check of a host name can be seen to fail).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::find_binary;

/// A CA whose files live in a directory of the caller's (kept as long as
/// the caller keeps it).
#[derive(Debug, Clone)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    openssl: PathBuf,
}

/// A certificate and its key, signed by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct Issued {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A server on 127.0.0.1 (and no host name).
    Server,
    /// A client presenting a certificate.
    Client,
}

impl Issued {
    /// The certificate, as PEM text.
    pub fn cert_pem(&self) -> String {
        read(&self.cert)
    }

    /// The key, as PEM text.
    pub fn key_pem(&self) -> String {
        read(&self.key)
    }
}

/// A file's text; panics with its name when it cannot be read.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

impl TestCa {
    /// A new CA named `name` (`<name>.crt`, `<name>.key` in `dir`). A
    /// missing `openssl` command fails the test.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("cannot create the certificate directory");
        let ca = TestCa {
            dir: dir.to_owned(),
            name: name.to_owned(),
            openssl: find_binary("openssl", "LEASEHOLD_OPENSSL", &[]),
        };
        ca.run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca
    }

    /// The CA's certificate file.
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    /// The CA's certificate, as PEM text.
    pub fn cert_pem(&self) -> String {
        read(&self.cert())
    }

    /// A certificate for `usage`, named `name` (`<name>.crt`, `<name>.key`
    /// in the CA's directory).
    pub fn issue(&self, name: &str, usage: Usage) -> Issued {
        let (extended, names) = match usage {
            Usage::Server => ("serverAuth", "\nsubjectAltName=IP:127.0.0.1"),
            Usage::Client => ("clientAuth", ""),
        };
        std::fs::write(
            self.dir.join(format!("{name}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={extended}\nauthorityKeyIdentifier=keyid{names}\n"
            ),
        )
        .expect("cannot write an extensions file");
        self.run(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-days",
            "2",
            "-CA",
            &format!("{}.crt", self.name),
            "-CAkey",
            &format!("{}.key", self.name),
            "-CAcreateserial",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
        Issued {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    fn run(&self, args: &[&str]) {
        let output = Command::new(&self.openssl)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("cannot run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
