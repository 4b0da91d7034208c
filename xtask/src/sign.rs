//! The checkout's test-signing certificate and Authenticode signing with osslsigncode.
//!
//! A root CA and a code-signing leaf are made once per checkout with openssl under
//! `.signing/` (ignored by git) and reused, so a VM that imported the root once trusts
//! every later build. Nothing here is secret beyond this checkout: it is a test
//! certificate, valid only where someone imports its root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tools::ensure_program;

pub(crate) struct TestCertificate {
    dir: PathBuf,
    /// The root in DER form, for `certutil -addstore` / `Import-Certificate` on the VM.
    pub(crate) root_cer: PathBuf,
    root_pem: PathBuf,
}

const ROOT_SUBJECT: &str = "/CN=cloudflt Test Root/O=cloudflt development (test signing only)";
const LEAF_SUBJECT: &str =
    "/CN=cloudflt Test Driver Signing/O=cloudflt development (test signing only)";

impl TestCertificate {
    /// Makes the certificate on first use, or finds the one made before.
    pub(crate) fn ensure(root: &Path) -> Result<Self> {
        let dir = root.join(".signing");
        let cert = Self {
            root_cer: dir.join("cloudflt-test-root.cer"),
            root_pem: dir.join("root.pem"),
            dir,
        };
        let files = [
            "root.key",
            "root.pem",
            "cloudflt-test-root.cer",
            "leaf.key",
            "leaf.pem",
        ];
        if files.iter().all(|f| cert.dir.join(f).exists()) {
            return Ok(cert);
        }
        ensure_program("openssl", "openssl")?;
        std::fs::create_dir_all(&cert.dir)?;
        let ext = cert.dir.join("ext.cnf");
        std::fs::write(
            &ext,
            "[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=unused\n\
             [root]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n\
             [leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=codeSigning\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        )?;
        let openssl = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&cert.dir)
                .output()
                .context("running openssl")?;
            if !out.status.success() {
                bail!(
                    "openssl {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:3072",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "3650",
            "-subj",
            ROOT_SUBJECT,
            "-sha256",
            "-config",
            "ext.cnf",
            "-extensions",
            "root",
        ])?;
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:3072",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            LEAF_SUBJECT,
            "-config",
            "ext.cnf",
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1825",
            "-sha256",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "leaf",
        ])?;
        openssl(&[
            "x509",
            "-in",
            "root.pem",
            "-outform",
            "DER",
            "-out",
            "cloudflt-test-root.cer",
        ])?;
        Ok(cert)
    }

    /// Signs `input` into `output` (SHA-256 Authenticode, root included in the chain).
    pub(crate) fn sign(&self, input: &Path, output: &Path) -> Result<()> {
        ensure_program("osslsigncode", "osslsigncode")?;
        if output.exists() {
            std::fs::remove_file(output)?;
        }
        let out = Command::new("osslsigncode")
            .args(["sign", "-h", "sha256", "-n", "cloudflt", "-certs"])
            .arg(self.dir.join("leaf.pem"))
            .arg("-key")
            .arg(self.dir.join("leaf.key"))
            .arg("-ac")
            .arg(&self.root_pem)
            .arg("-in")
            .arg(input)
            .arg("-out")
            .arg(output)
            .output()
            .context("running osslsigncode")?;
        if !out.status.success() {
            bail!(
                "osslsigncode sign {} failed: {}",
                input.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Verifies the Authenticode signature of `file` against this checkout's root.
    pub(crate) fn verify(&self, file: &Path) -> Result<String> {
        ensure_program("osslsigncode", "osslsigncode")?;
        let out = Command::new("osslsigncode")
            .args(["verify", "-CAfile"])
            .arg(&self.root_pem)
            .arg("-in")
            .arg(file)
            .output()
            .context("running osslsigncode")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "signature does not verify: {}",
                text.lines()
                    .filter(|l| l.contains("fail") || l.contains("Fail") || l.contains("rror"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        Ok(text)
    }
}
