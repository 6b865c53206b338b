//! The real `sf-sign` binary against real peers: keys made by gpg and by sequoia in the test,
//! signatures checked by `gpg --verify` and `sqv`, gpg's signatures checked by `sf-sign verify`,
//! and the real Spack fixtures signed and verified.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use sequoia_openpgp as openpgp;
use serde_json::Value;

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::serialize::SerializeInto;
use sf_testkit::{fixture, parse_file_commands, require_tool};

fn sf_sign() -> Command {
    let mut c = Command::cargo_bin("sf-sign").unwrap();
    // A clean slate: no runner variables, SF_* settings or keys leak in from the caller.
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.starts_with("GITHUB_") || k.starts_with("GPG_") {
            c.env_remove(k);
        }
    }
    c
}

/// `sf-sign verify mirror DIR --fingerprint FPR`.
fn verify_mirror(mirror: &Path, fingerprint: &str) -> Command {
    let mut c = sf_sign();
    c.arg("verify")
        .arg("mirror")
        .arg(mirror)
        .args(["--fingerprint", fingerprint]);
    c
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A throwaway gpg home; its agent is stopped when dropped.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Self {
        require_tool("gpg");
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        Gpg { home }
    }

    fn cmd(&self) -> StdCommand {
        let mut c = StdCommand::new("gpg");
        c.arg("--homedir").arg(self.home.path()).args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
        ]);
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", stderr(&out));
        out
    }

    /// Generate a signing key; returns its fingerprint.
    fn generate(&self, uid: &str, algo: &str, passphrase: &str) -> String {
        self.run(&[
            "--passphrase",
            passphrase,
            "--quick-gen-key",
            uid,
            algo,
            "sign",
            "never",
        ]);
        let out = self.run(&["--with-colons", "--list-keys", uid]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .unwrap()
    }

    /// The fingerprints `--list-keys` shows for a key: the primary first, then its subkeys.
    fn fingerprints(&self, key: &str) -> Vec<String> {
        let out = self.run(&["--with-colons", "--list-keys", key]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .collect()
    }

    /// Run `--edit-key` with commands answered on stdin (what gpg's `--command-fd` takes).
    fn edit(&self, fpr: &str, passphrase: &str, commands: &str) {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args([
                "--passphrase",
                passphrase,
                "--command-fd",
                "0",
                "--edit-key",
                fpr,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "gpg --edit-key: {}", stderr(&out));
    }

    fn export_secret(&self, fpr: &str, passphrase: &str) -> String {
        String::from_utf8(
            self.run(&[
                "--passphrase",
                passphrase,
                "--armor",
                "--export-secret-keys",
                fpr,
            ])
            .stdout,
        )
        .unwrap()
    }

    fn export_public(&self, fpr: &str, to: &Path) {
        let out = self.run(&["--armor", "--export", fpr]);
        fs::write(to, out.stdout).unwrap();
    }

    fn import(&self, file: &Path) {
        self.run(&["--import", file.to_str().unwrap()]);
    }

    fn verifies(&self, signature: &Path, data: Option<&Path>) -> bool {
        let mut c = self.cmd();
        c.arg("--verify").arg(signature);
        if let Some(d) = data {
            c.arg(d);
        }
        let out = c.output().unwrap();
        out.status.success() && stderr(&out).contains("Good signature")
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = StdCommand::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .status();
    }
}

fn base64(bytes: &[u8]) -> String {
    let out = StdCommand::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(bytes).unwrap();
    String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
}

/// A sequoia-made key: (armoured secret key, public key file, fingerprint).
struct TestKey {
    secret: String,
    public: PathBuf,
    fpr: String,
    _dir: tempfile::TempDir,
}

fn sequoia_key(builder: CertBuilder) -> TestKey {
    let (cert, _) = builder.generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("pub.asc");
    fs::write(&public, cert.armored().to_vec().unwrap()).unwrap();
    let secret = cert.as_tsk().armored().to_vec().unwrap();
    TestKey {
        secret: String::from_utf8(secret).unwrap(),
        public,
        fpr: cert.fingerprint().to_hex(),
        _dir: dir,
    }
}

fn new_key() -> TestKey {
    sequoia_key(CertBuilder::general_purpose(Some(
        "Mirror Signer <m@example.invalid>",
    )))
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every file under a folder with its bytes, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn fixture_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mirror");
    copy_dir(&fixture(name), &dir);
    (tmp, dir)
}

const SIGNED_FPR: &str = "756149701D5AF77338F02F92169016E7389B3308";

#[test]
fn rsa4096_gpg_key_with_passphrase_signs_files_gpg_and_sqv_verify() {
    require_tool("sqv");
    let gpg = Gpg::new();
    let pass = "s3cret passphrase";
    let fpr = gpg.generate("Tarball Signer <t@example.invalid>", "rsa4096", pass);
    let secret = gpg.export_secret(&fpr, pass);
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("pub.asc");
    gpg.export_public(&fpr, &public);
    let a = dir.path().join("slurm-25.11-noble-software.tar.gz");
    let b = dir.path().join("other.tar.gz");
    fs::write(
        &a,
        (0..3_000_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(&b, b"small").unwrap();
    let results = dir.path().join("results");
    let output = dir.path().join("github_output");
    fs::write(&output, "").unwrap();

    // As CI stores it: base64 of the armoured key.
    let secret_b64 = base64(secret.as_bytes());
    let out = sf_sign()
        .args([
            "file",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--key-fingerprint",
            &fpr[24..],
        ])
        .env("GPG_PRIVATE_KEY", &secret_b64)
        .env("GPG_PASSPHRASE", pass)
        .env("SF_RESULTS_DIR", &results)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .assert()
        .success();
    let o = out.get_output();
    let report = json(&o.stdout);
    assert_eq!(report["fingerprint"], fpr.as_str());
    assert_eq!(report["algorithm"], "SHA512");
    assert_eq!(report["files"][0]["size"], 3_000_000);

    // Secrets: masked, and nowhere else in any output.
    let err = stderr(o);
    assert!(err.contains(&format!("::add-mask::{pass}")), "{err}");
    assert!(err.contains(&format!("::add-mask::{secret_b64}")));
    let secret_line = &secret_b64[100..160];
    for line in err.lines().filter(|l| !l.starts_with("::add-mask::")) {
        assert!(
            !line.contains(pass) && !line.contains(secret_line),
            "{line}"
        );
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!stdout.contains(pass) && !stdout.contains(secret_line));

    let outputs = parse_file_commands(&fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["fingerprint"], fpr);
    assert_eq!(outputs["algorithm"], "SHA512");
    assert_eq!(outputs["signed-count"], "2");
    let record: Value = json(
        &fs::read(
            fs::read_dir(&results)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    );
    assert_eq!(record["step"], "sf-sign file");
    assert_eq!(record["status"], "success");
    assert_eq!(record["artifacts"][0]["signed_by"], fpr.as_str());
    assert_eq!(record["metrics"]["files_signed"], 2);
    assert_eq!(record["metrics"]["bytes_signed"], 3_000_005);
    assert_eq!(record["outputs"]["algorithm"], "SHA512");
    assert_eq!(record["outputs"]["fingerprint"], fpr.as_str());
    assert_eq!(record["outputs"]["signed-count"], "2");
    assert_eq!(
        outputs["signed"],
        format!("{}.asc\n{}.asc", a.display(), b.display())
    );
    let record_text = record.to_string();
    assert!(!record_text.contains(pass) && !record_text.contains(secret_line));

    for f in [&a, &b] {
        let asc = PathBuf::from(format!("{}.asc", f.display()));
        assert!(fs::read_to_string(&asc)
            .unwrap()
            .starts_with("-----BEGIN PGP SIGNATURE-----"));
        assert!(
            gpg.verifies(&asc, Some(f)),
            "gpg --verify {}",
            asc.display()
        );
        let sqv = StdCommand::new("sqv")
            .arg("--keyring")
            .arg(&public)
            .arg(&asc)
            .arg(f)
            .output()
            .unwrap();
        assert!(sqv.status.success(), "sqv: {}", stderr(&sqv));
        assert_eq!(String::from_utf8_lossy(&sqv.stdout).trim(), fpr);
    }
    sf_sign()
        .args([
            "verify",
            "file",
            a.to_str().unwrap(),
            "--cert",
            public.to_str().unwrap(),
        ])
        .assert()
        .success();

    // One changed byte: gpg, sqv and sf-sign all reject it.
    let mut bytes = fs::read(&a).unwrap();
    bytes[1_500_000] ^= 0x01;
    fs::write(&a, bytes).unwrap();
    let asc = PathBuf::from(format!("{}.asc", a.display()));
    assert!(!gpg.verifies(&asc, Some(&a)));
    assert!(!StdCommand::new("sqv")
        .arg("--keyring")
        .arg(&public)
        .arg(&asc)
        .arg(&a)
        .status()
        .unwrap()
        .success());
    let out = sf_sign()
        .args([
            "verify",
            "file",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--cert",
            public.to_str().unwrap(),
        ])
        .assert()
        .code(1);
    let err = stderr(out.get_output());
    assert!(
        err.contains("1 item(s) failed")
            && err.contains("slurm-25.11-noble-software.tar.gz: bad signature"),
        "{err}"
    );
}

#[test]
fn gpg_made_signatures_verify_with_sf_sign_and_ed25519_gpg_keys_sign() {
    require_tool("sqv");
    let gpg = Gpg::new();
    let fpr = gpg.generate("Ed Signer <e@example.invalid>", "ed25519", "");
    let dir = tempfile::tempdir().unwrap();
    let public = dir.path().join("pub.asc");
    gpg.export_public(&fpr, &public);
    let data = dir.path().join("data.tar.gz");
    fs::write(&data, b"payload ".repeat(10_000)).unwrap();

    // gpg signs (armoured and binary); sf-sign verifies, pinned to the fingerprint.
    gpg.run(&[
        "--local-user",
        &fpr,
        "--detach-sign",
        "--armor",
        data.to_str().unwrap(),
    ]);
    let bin_sig = dir.path().join("data.sig");
    gpg.run(&[
        "--local-user",
        &fpr,
        "--output",
        bin_sig.to_str().unwrap(),
        "--detach-sign",
        data.to_str().unwrap(),
    ]);
    let out = sf_sign()
        .args([
            "verify",
            "file",
            data.to_str().unwrap(),
            "--cert",
            public.to_str().unwrap(),
            "--fingerprint",
            &fpr,
        ])
        .assert()
        .success();
    let v = json(&out.get_output().stdout);
    assert_eq!(v["items"][0]["signer"], fpr.as_str());
    sf_sign()
        .args([
            "verify",
            "file",
            data.to_str().unwrap(),
            "--signature",
            bin_sig.to_str().unwrap(),
        ])
        .args(["--cert", public.to_str().unwrap()])
        .assert()
        .success();

    // Another key's certificate does not verify it, and a pin on another key is refused.
    let other = new_key();
    let out = sf_sign()
        .args([
            "verify",
            "file",
            data.to_str().unwrap(),
            "--cert",
            other.public.to_str().unwrap(),
        ])
        .assert()
        .code(1);
    assert!(
        stderr(out.get_output()).contains("not the expected key"),
        "{}",
        stderr(out.get_output())
    );
    sf_sign()
        .args([
            "verify",
            "file",
            data.to_str().unwrap(),
            "--cert",
            public.to_str().unwrap(),
            "--fingerprint",
            &other.fpr,
        ])
        .assert()
        .code(2);

    // The Ed25519 key from gpg signs here; gpg and sqv accept the result.
    fs::remove_file(format!("{}.asc", data.display())).unwrap();
    sf_sign()
        .args(["file", data.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", gpg.export_secret(&fpr, ""))
        .assert()
        .success();
    let asc = dir.path().join("data.tar.gz.asc");
    assert!(gpg.verifies(&asc, Some(&data)));
    assert!(StdCommand::new("sqv")
        .arg("--keyring")
        .arg(&public)
        .arg(&asc)
        .arg(&data)
        .status()
        .unwrap()
        .success());
}

#[test]
fn the_unsigned_fixture_signed_matches_the_signed_fixtures_shape_and_gpg_verifies_it() {
    let gpg = Gpg::new();
    let key = new_key();
    let (tmp, mirror) = fixture_copy("spack-v3-unsigned");
    // What the build container pushed may lack v3/layout.json: signing writes it.
    fs::remove_file(mirror.join("v3/layout.json")).unwrap();
    let before = snapshot(&mirror);
    let key_file = tmp.path().join("secret.asc");
    fs::write(&key_file, &key.secret).unwrap();
    let results = tmp.path().join("results");
    let output = tmp.path().join("github_output");
    fs::write(&output, "").unwrap();

    let out = sf_sign()
        .args([
            "mirror",
            mirror.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
        ])
        .env("SF_RESULTS_DIR", &results)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .assert()
        .success();
    let report = json(&out.get_output().stdout);
    assert_eq!(report["signed"].as_array().unwrap().len(), 3);
    assert_eq!(report["fingerprint"], key.fpr.as_str());
    assert_eq!(report["algorithm"], "SHA512");
    assert_eq!(report["layout_written"], true);
    assert_eq!(report["keys_index_updated"], true);
    let key_manifest_key = format!("v3/manifests/key/{}.key.manifest.json", key.fpr);
    assert_eq!(report["key_manifest"], key_manifest_key.as_str());
    let after = snapshot(&mirror);

    // Step outputs and the result record: who signed, how many, with what hash.
    let outputs = parse_file_commands(&fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["fingerprint"], key.fpr);
    assert_eq!(outputs["algorithm"], "SHA512");
    assert_eq!(outputs["signed-count"], "3");
    assert_eq!(outputs["key-manifest"], key_manifest_key);
    let mut signed_keys: Vec<&str> = outputs["signed"].lines().collect();
    signed_keys.sort();
    let mut manifests: Vec<&str> = before
        .keys()
        .filter(|k| k.ends_with(".spec.manifest.json"))
        .map(String::as_str)
        .collect();
    manifests.sort();
    assert_eq!(signed_keys, manifests);
    let record_path = fs::read_dir(&results)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record = json(&fs::read(&record_path).unwrap());
    fs::remove_dir_all(&results).unwrap();
    assert_eq!(record["step"], "sf-sign mirror");
    assert_eq!(record["status"], "success");
    assert_eq!(record["metrics"]["manifests_signed"], 3);
    assert_eq!(record["metrics"]["files_signed"], 3);
    assert_eq!(record["metrics"]["manifests_already_signed"], 0);
    assert_eq!(record["outputs"]["algorithm"], "SHA512");
    assert_eq!(record["outputs"]["fingerprint"], key.fpr.as_str());
    assert_eq!(record["outputs"]["signed-count"], "3");
    let spec_artifacts: Vec<&Value> = record["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "spec-manifest")
        .collect();
    assert_eq!(spec_artifacts.len(), 3);
    assert!(spec_artifacts
        .iter()
        .all(|a| a["signed_by"] == key.fpr.as_str()));

    // Same shape as the fixture Spack signed: the unsigned tree plus two blobs and two key manifests.
    let signed_fixture = snapshot(&fixture("spack-v3-signed"));
    let shape = |s: &BTreeMap<String, Vec<u8>>, fpr: &str| -> Vec<String> {
        s.keys()
            .map(|k| {
                if k.starts_with("blobs/") {
                    "blob".to_string()
                } else {
                    k.replace(fpr, "<FPR>")
                }
            })
            .collect()
    };
    assert_eq!(shape(&after, &key.fpr), shape(&signed_fixture, SIGNED_FPR));
    assert_eq!(after["v3/layout.json"], b"{\"signing\": \"gpg\"}");
    for (k, unsigned) in before
        .iter()
        .filter(|(k, _)| k.ends_with(".spec.manifest.json"))
    {
        let signed = String::from_utf8(after[k].clone()).unwrap();
        let head = format!("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{}\n-----BEGIN PGP SIGNATURE-----\n", String::from_utf8_lossy(unsigned));
        assert!(signed.starts_with(&head), "{k}:\n{signed}");
        // Spack's own signed manifest has exactly that framing too.
        assert!(
            String::from_utf8_lossy(&signed_fixture[k]).starts_with(&head),
            "{k} in the fixture"
        );
    }
    for (k, v) in &before {
        if !k.ends_with(".spec.manifest.json") {
            assert_eq!(&after[k], v, "{k} must be untouched");
        }
    }
    let keys_manifest: Value = json(&after["v3/manifests/key/keys.manifest.json"]);
    let index_sum = keys_manifest["data"][0]["checksum"].as_str().unwrap();
    assert_eq!(
        keys_manifest["data"][0]["mediaType"],
        "application/vnd.spack.keyindex.v1+json"
    );
    let index_blob = &after[&format!("blobs/sha256/{}/{index_sum}", &index_sum[..2])];
    assert_eq!(
        String::from_utf8_lossy(index_blob),
        format!("{{\"keys\":{{\"{}\":{{}}}}}}", key.fpr)
    );
    let key_manifest: Value =
        json(&after[&format!("v3/manifests/key/{}.key.manifest.json", key.fpr)]);
    assert_eq!(key_manifest["data"][0]["mediaType"], "application/pgp-keys");
    assert_eq!(key_manifest["data"][0]["compression"], "none");
    let key_sum = key_manifest["data"][0]["checksum"].as_str().unwrap();
    let key_blob = tmp
        .path()
        .join("mirror")
        .join(format!("blobs/sha256/{}/{key_sum}", &key_sum[..2]));

    // gpg, given only the key the mirror publishes, verifies every manifest.
    gpg.import(&key_blob);
    for k in after.keys().filter(|k| k.ends_with(".spec.manifest.json")) {
        assert!(gpg.verifies(&mirror.join(k), None), "gpg --verify {k}");
    }
    let out = verify_mirror(&mirror, &key.fpr).assert().success();
    assert_eq!(
        json(&out.get_output().stdout)["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    sf_sign()
        .args([
            "verify",
            "mirror",
            mirror.to_str().unwrap(),
            "--cert",
            key.public.to_str().unwrap(),
        ])
        .assert()
        .success();

    // Idempotent: a second run changes no byte.
    let out = sf_sign()
        .args(["mirror", mirror.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .success();
    let again = json(&out.get_output().stdout);
    assert_eq!(again["signed"].as_array().unwrap().len(), 0);
    assert_eq!(again["already_signed"].as_array().unwrap().len(), 3);
    assert_eq!(again["layout_written"], false);
    assert_eq!(again["keys_index_updated"], false);
    assert_eq!(snapshot(&mirror), after);
}

#[test]
fn the_signed_fixture_verifies_with_its_own_key_and_fails_with_another() {
    let dir = fixture("spack-v3-signed");
    verify_mirror(&dir, SIGNED_FPR).assert().success();
    sf_sign()
        .args([
            "verify",
            "mirror",
            dir.to_str().unwrap(),
            "--fingerprint",
            "169016E7389B3308",
        ])
        .assert()
        .success();
    let other = new_key();
    let out = sf_sign()
        .args([
            "verify",
            "mirror",
            dir.to_str().unwrap(),
            "--cert",
            other.public.to_str().unwrap(),
        ])
        .assert()
        .code(1);
    let err = stderr(out.get_output());
    assert!(err.contains("3 item(s) failed"), "{err}");
    assert!(
        err.contains("greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan.spec.manifest.json: signed by"),
        "{err}"
    );
    let out = verify_mirror(&dir, &other.fpr).assert().code(1);
    assert!(
        stderr(out.get_output()).contains("publishes no key matching"),
        "{}",
        stderr(out.get_output())
    );
    // Unsigned manifests are not a signed mirror.
    let out = sf_sign()
        .args([
            "verify",
            "mirror",
            fixture("spack-v3-unsigned").to_str().unwrap(),
            "--cert",
            other.public.to_str().unwrap(),
        ])
        .assert()
        .code(1);
    assert!(stderr(out.get_output()).contains("not signed"));
}

#[test]
fn one_changed_byte_in_a_blob_or_a_manifest_fails_verification() {
    let key = new_key();
    let (_tmp, mirror) = fixture_copy("spack-v3-unsigned");
    sf_sign()
        .args(["mirror", mirror.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .success();
    let verify = || verify_mirror(&mirror, &key.fpr).assert();
    verify().success();

    let blob = mirror
        .join("blobs/sha256/e1/e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1");
    let original = fs::read(&blob).unwrap();
    let mut changed = original.clone();
    changed[42] ^= 0x20;
    fs::write(&blob, &changed).unwrap();
    let out = verify().code(1);
    let err = stderr(out.get_output());
    assert!(
        err.contains("greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan.spec.manifest.json")
            && err.contains("e1321a274399"),
        "{err}"
    );
    fs::write(&blob, &original).unwrap();
    verify().success();

    // Changes only the signature check can see: the blobs and their sizes stay right.
    let name = "libgreet-1.0-ckrbas73k7j2juaix33wt23ixqfu2or2.spec.manifest.json";
    let manifest = mirror.join(format!("v3/manifests/spec/libgreet/{name}"));
    let original = fs::read_to_string(&manifest).unwrap();
    let bad_signature_of = |err: &str| {
        err.lines()
            .any(|l| l.contains(name) && l.contains(": bad signature by"))
    };

    // The signed JSON: one value no blob check reads.
    assert!(original.contains("\"compression\":\"gzip\""));
    fs::write(
        &manifest,
        original.replacen("\"compression\":\"gzip\"", "\"compression\":\"gzir\"", 1),
    )
    .unwrap();
    let out = verify().code(1);
    let err = stderr(out.get_output());
    assert!(
        err.contains("1 item(s) failed") && bad_signature_of(&err),
        "{err}"
    );

    // One byte of the signature itself, inside its armour.
    fs::write(&manifest, flip_last_signature_byte(&original)).unwrap();
    let out = verify().code(1);
    let err = stderr(out.get_output());
    assert!(
        err.contains("1 item(s) failed") && bad_signature_of(&err),
        "{err}"
    );
    fs::write(&manifest, &original).unwrap();
    verify().success();
}

/// The armoured signature of a cleartext-signed document with its last byte (inside the last
/// MPI, so the packet still parses) flipped, and the text before it untouched.
fn flip_last_signature_byte(doc: &str) -> String {
    let start = doc.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    let (head, armour) = doc.split_at(start);
    let mut lines = armour.lines();
    let begin = lines.next().unwrap();
    // Armour headers end at the first empty line; the body runs to the CRC (`=`) or END line.
    let mut body = String::new();
    for l in lines.by_ref() {
        if l.is_empty() {
            break;
        }
    }
    let mut tail = Vec::new();
    for l in lines {
        if l.starts_with('=') || l.starts_with("-----") || !tail.is_empty() {
            tail.push(l);
        } else {
            body.push_str(l);
        }
    }
    let mut packet = base64_decode(&body);
    *packet.last_mut().unwrap() ^= 0x01;
    let mut out = format!("{head}{begin}\n\n");
    for chunk in base64(&packet).as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    for l in tail {
        out.push_str(l);
        out.push('\n');
    }
    assert_ne!(out, doc);
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let out = StdCommand::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin
        .as_ref()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = out.wait_with_output().unwrap();
    assert!(o.status.success());
    o.stdout
}

#[test]
fn our_own_signature_that_no_longer_verifies_is_named_as_such_not_as_another_signers() {
    let key = new_key();
    let (_tmp, mirror) = fixture_copy("spack-v3-unsigned");
    let sign = |extra: &[&str]| {
        sf_sign()
            .args(["mirror", mirror.to_str().unwrap()])
            .args(extra)
            .env("GPG_PRIVATE_KEY", &key.secret)
            .assert()
    };
    sign(&[]).success();
    let name = "libgreet-1.0-ckrbas73k7j2juaix33wt23ixqfu2or2.spec.manifest.json";
    let manifest = mirror.join(format!("v3/manifests/spec/libgreet/{name}"));
    let original = fs::read_to_string(&manifest).unwrap();

    for (what, broken) in [
        (
            "a flipped signature byte",
            flip_last_signature_byte(&original),
        ),
        (
            "a changed manifest",
            original.replacen("\"compression\":\"gzip\"", "\"compression\":\"gzir\"", 1),
        ),
    ] {
        fs::write(&manifest, &broken).unwrap();
        let before = snapshot(&mirror);
        let out = sign(&[]).code(2);
        let err = stderr(out.get_output());
        let line = err
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{what}: no line names {name}: {err}"));
        assert!(
            line.contains(&format!("the signature by {} does not verify", key.fpr))
                && line.contains("--resign")
                && !line.contains("not by"),
            "{what}: {err}"
        );
        assert!(
            err.contains("1 problem(s), nothing was changed"),
            "{what}: {err}"
        );
        assert_eq!(snapshot(&mirror), before, "{what}: nothing changed");
    }

    // --resign signs the manifest as it is now, and the mirror verifies again.
    fs::write(&manifest, flip_last_signature_byte(&original)).unwrap();
    let out = sign(&["--resign"]).success();
    let signed = json(&out.get_output().stdout)["signed"].clone();
    assert!(
        signed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k.as_str().unwrap().ends_with(name)),
        "{signed}"
    );
    verify_mirror(&mirror, &key.fpr).assert().success();

    // A manifest signed by another key keeps its message.
    let other = new_key();
    let out = sf_sign()
        .args(["mirror", mirror.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &other.secret)
        .assert()
        .code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains(&format!("{name}: already signed, not by {}", other.fpr))
            && !err.contains("does not verify"),
        "{err}"
    );
}

#[test]
fn resigning_merges_the_key_index_and_is_needed_for_another_keys_manifests() {
    let key = new_key();
    let (_tmp, mirror) = fixture_copy("spack-v3-signed");
    let before = snapshot(&mirror);
    let out = sf_sign()
        .args(["mirror", mirror.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains("already signed") && err.contains("--resign"),
        "{err}"
    );
    assert_eq!(snapshot(&mirror), before, "nothing changed");

    sf_sign()
        .args(["mirror", mirror.to_str().unwrap(), "--resign"])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .success();
    let keys_manifest: Value =
        json(&fs::read(mirror.join("v3/manifests/key/keys.manifest.json")).unwrap());
    let sum = keys_manifest["data"][0]["checksum"].as_str().unwrap();
    let index =
        fs::read_to_string(mirror.join(format!("blobs/sha256/{}/{sum}", &sum[..2]))).unwrap();
    assert_eq!(
        index,
        format!(
            "{{\"keys\":{{\"{SIGNED_FPR}\":{{}},\"{}\":{{}}}}}}",
            key.fpr
        )
    );
    verify_mirror(&mirror, &key.fpr).assert().success();
    verify_mirror(&mirror, SIGNED_FPR).assert().code(1);
}

#[test]
fn bad_mirrors_are_refused_with_exit_2_and_left_untouched() {
    let key = new_key();
    let (_tmp, mirror) = fixture_copy("spack-v3-unsigned");
    fs::remove_file(
        mirror.join(
            "blobs/sha256/51/51fa65b66213869fb8178d9971994f34e76e913719b54a8626c9a60faa98eecf",
        ),
    )
    .unwrap();
    let before = snapshot(&mirror);
    let out = sf_sign()
        .args(["mirror", mirror.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains("greetdata-1.0-laaqxpl6kiffa27mif5bylcjualzweos.spec.manifest.json")
            && err.contains("51fa65b66213")
            && err.contains("is missing"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"));
    assert_eq!(snapshot(&mirror), before);

    let (_tmp2, v2) = fixture_copy("spack-v2-signed");
    let before = snapshot(&v2);
    let out = sf_sign()
        .args(["mirror", v2.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .code(2);
    assert!(
        stderr(out.get_output()).contains("layout-2"),
        "{}",
        stderr(out.get_output())
    );
    assert_eq!(snapshot(&v2), before);
    verify_mirror(&v2, &key.fpr).assert().code(2);

    let empty = tempfile::tempdir().unwrap();
    sf_sign()
        .args(["mirror", empty.path().to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .code(2);
}

#[test]
fn a_blob_with_the_wrong_checksum_or_a_version_2_manifest_is_refused_and_nothing_changes() {
    let key = new_key();
    let (_tmp, mirror) = fixture_copy("spack-v3-unsigned");
    let sign = || {
        sf_sign()
            .args(["mirror", mirror.to_str().unwrap()])
            .env("GPG_PRIVATE_KEY", &key.secret)
            .assert()
    };

    // Same size, one byte changed: only the sha256 tells.
    let sum = "e1321a274399add49ff46d25a51cca7765382bb8775f6e6fd22bafa88ceaa1e1";
    let blob = mirror.join(format!("blobs/sha256/e1/{sum}"));
    let original = fs::read(&blob).unwrap();
    let mut changed = original.clone();
    changed[10] ^= 0x01;
    fs::write(&blob, &changed).unwrap();
    let before = snapshot(&mirror);
    let out = sign().code(2);
    let err = stderr(out.get_output());
    assert!(
        err.lines().any(|l| l
            .contains("greet-1.0-vg6h5mxa7kdxvkzohnebjx3tcdjqufan.spec.manifest.json")
            && l.contains("has checksum")
            && l.contains(&format!("the record says {sum}"))),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(out.get_output().stdout.is_empty());
    assert_eq!(snapshot(&mirror), before);
    fs::write(&blob, &original).unwrap();

    // A manifest of another version.
    let name = "libgreet-1.0-ckrbas73k7j2juaix33wt23ixqfu2or2.spec.manifest.json";
    let manifest = mirror.join(format!("v3/manifests/spec/libgreet/{name}"));
    let text = fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\"version\":3,"));
    fs::write(
        &manifest,
        text.replacen("\"version\":3,", "\"version\":2,", 1),
    )
    .unwrap();
    let before = snapshot(&mirror);
    let out = sign().code(2);
    let err = stderr(out.get_output());
    assert!(
        err.lines()
            .any(|l| l.contains(name) && l.contains("manifest version 2, expected 3")),
        "{err}"
    );
    assert_eq!(snapshot(&mirror), before);

    // Put right, it signs.
    fs::write(&manifest, &text).unwrap();
    sign().success();
}

#[test]
fn verify_mirror_fails_when_the_key_index_does_not_list_the_signer() {
    let key = new_key();
    let (_tmp, mirror) = fixture_copy("spack-v3-unsigned");
    sf_sign()
        .args(["mirror", mirror.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .success();
    // The key index of another mirror (Spack's signed fixture: its own key only).
    let signed = fixture("spack-v3-signed");
    let keys_manifest = "v3/manifests/key/keys.manifest.json";
    let theirs = fs::read(signed.join(keys_manifest)).unwrap();
    let sum = json(&theirs)["data"][0]["checksum"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = format!("blobs/sha256/{}/{sum}", &sum[..2]);
    fs::create_dir_all(mirror.join(&blob).parent().unwrap()).unwrap();
    fs::copy(signed.join(&blob), mirror.join(&blob)).unwrap();
    fs::write(mirror.join(keys_manifest), &theirs).unwrap();

    // With its certificate given: every manifest verifies, the index does not list the signer.
    let out = sf_sign()
        .args(["verify", "mirror", mirror.to_str().unwrap(), "--cert"])
        .arg(&key.public)
        .assert()
        .code(1);
    let err = stderr(out.get_output());
    assert!(
        err.contains("1 item(s) failed")
            && err.contains(&format!(
                "keys.manifest.json: does not list the signing key {}",
                key.fpr
            )),
        "{err}"
    );
    // Pinned, the mirror's own keys are looked up: it publishes none matching.
    let out = sf_sign()
        .args([
            "verify",
            "mirror",
            mirror.to_str().unwrap(),
            "--fingerprint",
        ])
        .arg(&key.fpr)
        .assert()
        .code(1);
    let err = stderr(out.get_output());
    assert!(
        err.contains(&format!("publishes no key matching {}", key.fpr)) && err.contains(SIGNED_FPR),
        "{err}"
    );
}

#[test]
fn bad_keys_are_refused_with_exit_2_naming_why_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.tar.gz");
    fs::write(&target, b"data").unwrap();
    let protected =
        sequoia_key(CertBuilder::general_purpose(Some("p")).set_password(Some("right".into())));
    let now = SystemTime::now();
    let expired = sequoia_key(
        CertBuilder::general_purpose(Some("e"))
            .set_creation_time(now - Duration::from_secs(3 * 86400))
            .set_validity_period(Duration::from_secs(86400)),
    );
    let (cert, rev) = CertBuilder::general_purpose(Some("r"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .generate()
        .unwrap();
    let revoked_cert = cert.insert_packets(rev).unwrap().0;
    let revoked = String::from_utf8(revoked_cert.as_tsk().armored().to_vec().unwrap()).unwrap();
    let good = new_key();
    let public_only = fs::read_to_string(&good.public).unwrap();

    // (case, environment, extra arguments, what the error must say)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong passphrase",
            vec![
                ("GPG_PRIVATE_KEY", protected.secret.clone()),
                ("GPG_PASSPHRASE", "wrong-pass-123".into()),
            ],
            vec![],
            "wrong passphrase",
        ),
        (
            "no passphrase",
            vec![("GPG_PRIVATE_KEY", protected.secret.clone())],
            vec![],
            "GPG_PASSPHRASE",
        ),
        ("no key", vec![], vec![], "no secret key"),
        (
            "public key only",
            vec![("GPG_PRIVATE_KEY", public_only)],
            vec![],
            "only public keys",
        ),
        (
            "garbage",
            vec![("GPG_PRIVATE_KEY", "not-a-key-garbage!!".into())],
            vec![],
            "not an OpenPGP key",
        ),
        (
            "expired",
            vec![("GPG_PRIVATE_KEY", expired.secret.clone())],
            vec![],
            "expired",
        ),
        (
            "revoked",
            vec![("GPG_PRIVATE_KEY", revoked)],
            vec![],
            "revoked",
        ),
        (
            "fingerprint mismatch",
            vec![("GPG_PRIVATE_KEY", good.secret.clone())],
            vec!["--fingerprint", "DFB92630BCA5AB71"],
            "not the pinned key DFB92630BCA5AB71",
        ),
        (
            "bad fingerprint",
            vec![("GPG_PRIVATE_KEY", good.secret.clone())],
            vec!["--fingerprint", "xyz"],
            "not a key fingerprint",
        ),
    ];
    // Each case through every signing command, with a result record: exit 2, nothing written
    // (the mirror byte for byte as it was, no SHA256SUMS), and no secret in stdout, stderr or the
    // failure record.
    let (_mirror_tmp, mirror) = fixture_copy("spack-v3-unsigned");
    let mirror_before = snapshot(&mirror);
    let sums_dir = tempfile::tempdir().unwrap();
    fs::write(sums_dir.path().join("a.tar.gz"), b"tarball").unwrap();
    let results = tempfile::tempdir().unwrap();
    for (name, envs, args, expect) in cases {
        for (cmd, path) in [
            ("file", target.as_path()),
            ("mirror", mirror.as_path()),
            ("sums", sums_dir.path()),
        ] {
            let name = format!("{name} ({cmd})");
            let mut c = sf_sign();
            c.arg(cmd)
                .arg(path)
                .args(&args)
                .env("SF_RESULTS_DIR", results.path());
            for (k, v) in &envs {
                c.env(k, v);
            }
            let out = c.assert().code(2);
            let o = out.get_output();
            let err = stderr(o);
            assert!(err.contains(expect), "{name}: {err}");
            assert!(o.stdout.is_empty(), "{name}");

            let records: Vec<PathBuf> = fs::read_dir(results.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(records.len(), 1, "{name}: {records:?}");
            let record_text = fs::read_to_string(&records[0]).unwrap();
            fs::remove_file(&records[0]).unwrap();
            let record = json(record_text.as_bytes());
            assert_eq!(record["step"], format!("sf-sign {cmd}").as_str(), "{name}");
            assert_eq!(record["status"], "failed", "{name}: {record}");
            assert_eq!(record["error"]["exit_code"], 2, "{name}: {record}");
            assert!(record_text.contains(expect), "{name}: {record_text}");

            for text in [&err, &record_text, &*String::from_utf8_lossy(&o.stdout)] {
                assert!(
                    !text.contains("wrong-pass-123")
                        && !text.contains("not-a-key-garbage")
                        && !text.contains("-----END PGP PRIVATE KEY BLOCK-----"),
                    "{name}: {text}"
                );
                for (_, v) in &envs {
                    for line in key_body_lines(v) {
                        assert!(!text.contains(&line), "{name}: key material in {text}");
                    }
                }
            }
            assert!(
                !dir.path().join("t.tar.gz.asc").exists(),
                "{name}: a signature was written"
            );
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                1,
                "{name}: stray files"
            );
            assert!(
                snapshot(&mirror) == mirror_before,
                "{name}: the mirror changed"
            );
            let names: Vec<_> = fs::read_dir(sums_dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                names,
                ["a.tar.gz"],
                "{name}: files written beside the tarball"
            );
        }
    }
    // The right passphrase from a file works.
    let pw = dir.path().join("pw");
    fs::write(&pw, "right\n").unwrap();
    sf_sign()
        .args([
            "file",
            target.to_str().unwrap(),
            "--passphrase-file",
            pw.to_str().unwrap(),
        ])
        .env("GPG_PRIVATE_KEY", &protected.secret)
        .assert()
        .success();
    fs::remove_file(&pw).unwrap();
    // Missing files are bad input too, and nothing is signed when one of several is missing.
    fs::remove_file(dir.path().join("t.tar.gz.asc")).unwrap();
    sf_sign()
        .args([
            "file",
            target.to_str().unwrap(),
            dir.path().join("missing").to_str().unwrap(),
        ])
        .env("GPG_PRIVATE_KEY", &good.secret)
        .assert()
        .code(2);
    assert!(!dir.path().join("t.tar.gz.asc").exists());
}

#[test]
fn gpg_keys_whose_signing_subkeys_expired_or_were_revoked_are_refused_naming_each() {
    let gpg = Gpg::new();
    let pass = "subkey passphrase";
    // A primary key that only certifies, then two signing subkeys: one expiring a second after
    // it is made, one revoked.
    gpg.run(&[
        "--passphrase",
        pass,
        "--quick-gen-key",
        "Rotating Signer <r@example.invalid>",
        "ed25519",
        "cert",
        "never",
    ]);
    let primary = gpg.fingerprints("Rotating Signer")[0].clone();
    gpg.run(&[
        "--passphrase",
        pass,
        "--quick-add-key",
        &primary,
        "ed25519",
        "sign",
        "seconds=1",
    ]);
    gpg.run(&[
        "--passphrase",
        pass,
        "--quick-add-key",
        &primary,
        "ed25519",
        "sign",
        "never",
    ]);
    let fprs = gpg.fingerprints(&primary);
    let (expiring, revoked) = (fprs[1].clone(), fprs[2].clone());
    gpg.edit(
        &primary,
        pass,
        &format!("key {revoked}\nrevkey\ny\n1\nrotated out\n\ny\nsave\n"),
    );
    let listing =
        String::from_utf8(gpg.run(&["--with-colons", "--list-keys", &primary]).stdout).unwrap();
    assert!(
        listing.lines().any(|l| l.starts_with("sub:r:")),
        "{listing}"
    );
    // Past the first subkey's expiry.
    std::thread::sleep(Duration::from_secs(2));
    let secret = gpg.export_secret(&primary, pass);

    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.tar.gz");
    fs::write(&target, b"data").unwrap();
    let out = sf_sign()
        .arg("file")
        .arg(&target)
        .env("GPG_PRIVATE_KEY", &secret)
        .env("GPG_PASSPHRASE", pass)
        .assert()
        .code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains(&format!("key {primary} has no signing (sub)key valid now")),
        "{err}"
    );
    assert!(
        err.contains(&format!("signing subkey {expiring} expired on 20")),
        "{err}"
    );
    assert!(
        err.contains(&format!("signing subkey {revoked} revoked")) && err.contains("rotated out"),
        "{err}"
    );
    assert!(
        err.contains(&format!("primary key {primary} not signing-capable")),
        "{err}"
    );
    assert!(!err.contains(pass), "{err}");
    assert_no_key_material(out.get_output(), &secret);
    assert!(!dir.path().join("t.tar.gz.asc").exists());

    // A new signing subkey, and the same key signs again; gpg accepts it.
    gpg.run(&[
        "--passphrase",
        pass,
        "--quick-add-key",
        &primary,
        "ed25519",
        "sign",
        "never",
    ]);
    let fresh = gpg.fingerprints(&primary)[3].clone();
    let out = sf_sign()
        .arg("file")
        .arg(&target)
        .env("GPG_PRIVATE_KEY", gpg.export_secret(&primary, pass))
        .env("GPG_PASSPHRASE", pass)
        .env("SF_SIGNING_FINGERPRINT", &primary)
        .assert()
        .success();
    let report = json(&out.get_output().stdout);
    assert_eq!(report["fingerprint"], primary.as_str());
    assert_eq!(report["signing_key"], fresh.as_str());
    assert!(gpg.verifies(&dir.path().join("t.tar.gz.asc"), Some(&target)));

    // The pin names the primary key: a subkey's fingerprint is refused, naming the primary.
    fs::remove_file(dir.path().join("t.tar.gz.asc")).unwrap();
    let out = sf_sign()
        .arg("file")
        .arg(&target)
        .env("GPG_PRIVATE_KEY", gpg.export_secret(&primary, pass))
        .env("GPG_PASSPHRASE", pass)
        .args(["--fingerprint", &fresh])
        .assert()
        .code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains(&format!("{fresh} is a subkey")) && err.contains(&format!("use {primary}")),
        "{err}"
    );
    assert!(!dir.path().join("t.tar.gz.asc").exists());
}

#[test]
fn a_fingerprint_alone_finds_the_certificate_beside_the_files_or_in_the_gpg_keyring() {
    let gpg = Gpg::new();
    let signer = gpg.generate("Tarball Signer <t@example.invalid>", "ed25519", "");
    let other = gpg.generate("Someone Else <o@example.invalid>", "ed25519", "");
    let subkey = new_key();
    let unknown = new_key();
    let empty_keyring = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let dist = dir.path().join("dist");
    fs::create_dir(&dist).unwrap();
    let tarball = dist.join("slurm-25.11-noble-software.tar.gz");
    fs::write(&tarball, b"tarball ".repeat(20_000)).unwrap();
    let secret = gpg.export_secret(&signer, "");
    sf_sign()
        .arg("file")
        .arg(&tarball)
        .env("GPG_PRIVATE_KEY", &secret)
        .assert()
        .success();
    sf_sign()
        .arg("sums")
        .arg(&dist)
        .env("GPG_PRIVATE_KEY", &secret)
        .assert()
        .success();
    let results = dir.path().join("results");
    let verify = |what: &str, fpr: &str, keyring: &Gpg| {
        let mut c = sf_sign();
        c.args(["verify", what]);
        c.arg(if what == "file" { &tarball } else { &dist });
        c.args(["--fingerprint", fpr])
            .env("GNUPGHOME", keyring.home.path())
            .env("SF_RESULTS_DIR", &results);
        c.assert()
    };
    let last_record = || -> Value {
        let mut records: Vec<_> = fs::read_dir(&results)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        records.sort_by_key(|p| fs::metadata(p).unwrap().modified().unwrap());
        let r = json(&fs::read(records.last().unwrap()).unwrap());
        fs::remove_dir_all(&results).unwrap();
        r
    };

    // Nothing in the folder: the gpg keyring has it.
    for what in ["file", "sums"] {
        let out = verify(what, &signer, &gpg).success();
        assert_eq!(
            json(&out.get_output().stdout)["signers"][0],
            signer.as_str()
        );
        let record = last_record();
        assert_eq!(
            record["inputs"]["certificates"][0],
            format!("gpg keyring ({signer})").as_str(),
            "{record}"
        );
        // The keyring holds the other key too, but it did not sign: exit 1, naming it.
        let out = verify(what, &other, &gpg).code(1);
        let err = stderr(out.get_output());
        assert!(
            err.contains("failed verification")
                && err.contains(&format!("not the expected key ({other})")),
            "{what}: {err}"
        );
        let _ = last_record();
    }
    // Nowhere: exit 2, saying where it looked.
    let out = verify("file", &unknown.fpr, &gpg).code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains(&format!("no certificate for key {} found", unknown.fpr))
            && err.contains(&format!("*.asc and *.pub files in {}", dist.display()))
            && err.contains(&format!("the gpg keyring (gpg --export {})", unknown.fpr))
            && err.contains("--cert"),
        "{err}"
    );
    let _ = last_record();

    // The public key exported beside the files (signatures in the folder are not mistaken for
    // it), with an empty keyring.
    gpg.export_public(&signer, &dist.join("signing-key.asc"));
    fs::copy(&subkey.public, dist.join("z.pub")).unwrap();
    for what in ["file", "sums"] {
        let out = verify(what, &signer, &empty_keyring).success();
        assert_eq!(
            json(&out.get_output().stdout)["signers"][0],
            signer.as_str()
        );
        let record = last_record();
        assert_eq!(
            record["inputs"]["certificates"][0],
            dist.join("signing-key.asc").to_str().unwrap(),
            "{record}"
        );
        verify(what, &other, &empty_keyring).code(2);
        let _ = last_record();
    }
    // A subkey's fingerprint is not a pin: the message names the primary key.
    use openpgp::parse::Parse;
    let cert = openpgp::Cert::from_file(&subkey.public).unwrap();
    let sub = cert
        .keys()
        .subkeys()
        .next()
        .unwrap()
        .key()
        .fingerprint()
        .to_hex();
    let out = verify("file", &sub, &empty_keyring).code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains(&format!("{sub} is a subkey")) && err.contains(&format!("use {}", subkey.fpr)),
        "{err}"
    );
}

#[test]
fn the_hash_follows_the_keys_preferences_but_never_below_sha256() {
    use openpgp::cert::Preferences;
    use openpgp::parse::Parse;
    use openpgp::policy::StandardPolicy;
    use openpgp::types::HashAlgorithm;
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.tar.gz");
    fs::write(&data, b"payload ".repeat(1000)).unwrap();
    // (gpg preference list, what the key then says, the hash the signature must use)
    let cases = [
        (
            "SHA256 AES256 ZLIB",
            vec![HashAlgorithm::SHA256],
            "SHA256",
            "8",
        ),
        (
            "SHA1 SHA256 AES256 ZLIB",
            vec![HashAlgorithm::SHA1, HashAlgorithm::SHA256],
            "SHA256",
            "8",
        ),
        (
            "SHA1 AES256 ZLIB",
            vec![HashAlgorithm::SHA1],
            "SHA512",
            "10",
        ),
    ];
    for (i, (prefs, expect_prefs, hash, gpg_algo)) in cases.into_iter().enumerate() {
        let uid = format!("Prefs {i} <p{i}@example.invalid>");
        gpg.run(&[
            "--passphrase",
            "",
            "--default-preference-list",
            prefs,
            "--quick-gen-key",
            &uid,
            "ed25519",
            "sign",
            "never",
        ]);
        let fpr = gpg.fingerprints(&uid)[0].clone();
        let secret = gpg.export_secret(&fpr, "");
        let cert = openpgp::Cert::from_bytes(secret.as_bytes()).unwrap();
        let policy = StandardPolicy::new();
        let vc = cert.with_policy(&policy, None).unwrap();
        assert_eq!(
            vc.preferred_hash_algorithms().unwrap(),
            &expect_prefs[..],
            "{prefs}"
        );

        let out = sf_sign()
            .arg("file")
            .arg(&data)
            .env("GPG_PRIVATE_KEY", &secret)
            .assert()
            .success();
        assert_eq!(json(&out.get_output().stdout)["algorithm"], hash, "{prefs}");
        let asc = dir.path().join("data.tar.gz.asc");
        let packets = gpg.run(&["--list-packets", asc.to_str().unwrap()]);
        let listing = String::from_utf8_lossy(&packets.stdout);
        assert!(
            listing.contains(&format!("digest algo {gpg_algo},")),
            "{prefs}: {listing}"
        );
        assert!(gpg.verifies(&asc, Some(&data)), "{prefs}");
        fs::remove_file(&asc).unwrap();
    }
}

#[test]
fn sums_are_what_sha256sum_checks_and_gpg_verifies() {
    let gpg = Gpg::new();
    let key = new_key();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("builds");
    fs::create_dir(&folder).unwrap();
    fs::write(
        folder.join("slurm-25.11-noble-software.tar.gz"),
        vec![1u8; 200_000],
    )
    .unwrap();
    fs::write(
        folder.join("slurm-25.11-noble-software.tar.gz.asc"),
        b"old signature",
    )
    .unwrap();
    fs::write(folder.join("BUILDINFO.json"), b"{}").unwrap();
    fs::write(folder.join(".hidden"), b"x").unwrap();

    let results = dir.path().join("results");
    let output = dir.path().join("github_output");
    fs::write(&output, "").unwrap();
    let out = sf_sign()
        .args(["sums", folder.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .env("SF_RESULTS_DIR", &results)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .assert()
        .success();
    let report = json(&out.get_output().stdout);
    let sums_path = folder.join("SHA256SUMS");
    let sig_path = folder.join("SHA256SUMS.asc");
    assert_eq!(report["fingerprint"], key.fpr.as_str());
    assert_eq!(report["algorithm"], "SHA512");
    assert_eq!(report["sums"], sums_path.to_str().unwrap());
    assert_eq!(report["signature"], sig_path.to_str().unwrap());
    let outputs = parse_file_commands(&fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["fingerprint"], key.fpr);
    assert_eq!(outputs["algorithm"], "SHA512");
    assert_eq!(outputs["signed-count"], "1");
    assert_eq!(outputs["signed"], sig_path.to_str().unwrap());
    assert_eq!(outputs["sums"], sums_path.to_str().unwrap());
    let record = json(
        &fs::read(
            fs::read_dir(&results)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    );
    assert_eq!(record["step"], "sf-sign sums");
    assert_eq!(record["status"], "success");
    assert_eq!(record["metrics"]["files_listed"], 2);
    assert_eq!(record["metrics"]["files_signed"], 1);
    assert_eq!(record["outputs"]["algorithm"], "SHA512");
    assert_eq!(record["outputs"]["signed-count"], "1");
    let sums_artifact = record["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "sums")
        .unwrap();
    assert_eq!(sums_artifact["signed_by"], key.fpr.as_str());
    let names: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["BUILDINFO.json", "slurm-25.11-noble-software.tar.gz"]
    );

    require_tool("sha256sum");
    let check = StdCommand::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&folder)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    gpg.import(&key.public);
    assert!(gpg.verifies(
        &folder.join("SHA256SUMS.asc"),
        Some(&folder.join("SHA256SUMS"))
    ));
    let verify = || {
        sf_sign()
            .args([
                "verify",
                "sums",
                folder.to_str().unwrap(),
                "--cert",
                key.public.to_str().unwrap(),
                "--fingerprint",
                &key.fpr,
            ])
            .assert()
    };
    verify().success();

    let tarball = folder.join("slurm-25.11-noble-software.tar.gz");
    let mut bytes = fs::read(&tarball).unwrap();
    bytes[100_000] = 2;
    fs::write(&tarball, bytes).unwrap();
    let out = verify().code(1);
    assert!(
        stderr(out.get_output()).contains("slurm-25.11-noble-software.tar.gz: sha256"),
        "{}",
        stderr(out.get_output())
    );

    // A changed list fails on its signature.
    let sums = folder.join("SHA256SUMS");
    let text = fs::read_to_string(&sums).unwrap();
    fs::write(&sums, text.replace("BUILDINFO", "BUILDINFX")).unwrap();
    let out = verify().code(1);
    assert!(
        stderr(out.get_output()).contains("bad signature"),
        "{}",
        stderr(out.get_output())
    );

    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    sf_sign()
        .args(["sums", empty.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .code(2);
}

#[test]
fn help_names_the_secret_variables_and_usage_errors_exit_2() {
    let out = sf_sign().arg("--help").assert().success();
    let help = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(
        help.contains("GPG_PRIVATE_KEY") && help.contains("GPG_PASSPHRASE"),
        "{help}"
    );
    sf_sign().arg("file").assert().code(2);
    sf_sign().args(["verify", "file", "x"]).assert().code(2);
}

/// The armoured body lines of a key file: what must never show up in any output.
fn key_body_lines(armored: &str) -> Vec<String> {
    armored
        .lines()
        .filter(|l| l.len() >= 40 && !l.starts_with("-----") && !l.contains(':'))
        .map(str::to_string)
        .collect()
}

fn assert_no_key_material(o: &std::process::Output, secret: &str) {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = stderr(o);
    for text in [&*out, &*err] {
        assert!(!text.contains("PRIVATE KEY BLOCK"), "{text}");
        for line in key_body_lines(secret) {
            assert!(!text.contains(&line), "key material in output: {text}");
        }
    }
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn generated_keys_sign_files_that_gpg_and_sqv_verify() {
    require_tool("sqv");
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("signing-key.asc");
    let public = dir.path().join("signing-key.pub.asc");
    let results = dir.path().join("results");
    let output = dir.path().join("github_output");
    fs::write(&output, "").unwrap();

    let out = sf_sign()
        .args(["key", "generate", "--out"])
        .arg(&secret)
        .arg("--public-out")
        .arg(&public)
        .args([
            "--uid",
            "Rehearsal <rehearsal@example.invalid>",
            "--expires",
            "1d",
        ])
        .env("SF_RESULTS_DIR", &results)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .assert()
        .success();
    let o = out.get_output();
    let report = json(&o.stdout);
    let fpr = report["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(fpr.len(), 40);
    assert_eq!(report["secret_key"], secret.to_str().unwrap());
    assert_eq!(report["public_key"], public.to_str().unwrap());
    assert_eq!(report["cipher"], "ed25519");
    assert_eq!(report["protected"], false);
    assert!(report["expires"].as_str().unwrap().ends_with('Z'));
    let secret_text = fs::read_to_string(&secret).unwrap();
    assert!(secret_text.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    assert!(fs::read_to_string(&public)
        .unwrap()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert_eq!(mode_of(&secret), 0o600);
    assert_no_key_material(o, &secret_text);
    let outputs = parse_file_commands(&fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["fingerprint"], fpr);
    assert_eq!(outputs["secret-key"], secret.to_str().unwrap());
    assert_eq!(outputs["public-key"], public.to_str().unwrap());
    let record_path = fs::read_dir(&results)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let record_text = fs::read_to_string(record_path).unwrap();
    let record: Value = json(record_text.as_bytes());
    assert_eq!(record["step"], "sf-sign key generate");
    assert_eq!(record["status"], "success");
    for line in key_body_lines(&secret_text) {
        assert!(!record_text.contains(&line));
    }

    // The key as CI would hold it: in GPG_PRIVATE_KEY, pinned by the fingerprint printed.
    let data = dir.path().join("slurm-25.11-noble-software.tar.gz");
    fs::write(&data, b"tarball ".repeat(50_000)).unwrap();
    let out = sf_sign()
        .arg("file")
        .arg(&data)
        .env("GPG_PRIVATE_KEY", &secret_text)
        .env("SF_SIGNING_FINGERPRINT", &fpr)
        .assert()
        .success();
    assert_eq!(json(&out.get_output().stdout)["fingerprint"], fpr.as_str());
    let asc = dir.path().join("slurm-25.11-noble-software.tar.gz.asc");
    gpg.import(&public);
    assert!(gpg.verifies(&asc, Some(&data)), "gpg --verify");
    let sqv = StdCommand::new("sqv")
        .arg("--keyring")
        .arg(&public)
        .arg(&asc)
        .arg(&data)
        .output()
        .unwrap();
    assert!(sqv.status.success(), "sqv: {}", stderr(&sqv));
    assert_eq!(String::from_utf8_lossy(&sqv.stdout).trim(), fpr);

    // gpg takes the generated secret key as it is.
    gpg.import(&secret);
    let listed = gpg.run(&["--with-colons", "--list-secret-keys", &fpr]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&format!("fpr:::::::::{fpr}:")));
}

#[test]
fn a_passphrase_protects_a_generated_key_and_rsa4096_keys_sign_too() {
    require_tool("sqv");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("k.asc");
    let public = dir.path().join("k.pub");
    let pass = "rehearsal passphrase";
    let out = sf_sign()
        .args(["key", "generate", "--cipher", "rsa4096", "--out"])
        .arg(&secret)
        .arg("--public-out")
        .arg(&public)
        .env("GPG_PASSPHRASE", pass)
        .env("GITHUB_ACTIONS", "true")
        .assert()
        .success();
    let o = out.get_output();
    let report = json(&o.stdout);
    assert_eq!(report["protected"], true);
    assert_eq!(report["cipher"], "rsa4096");
    assert_eq!(report["expires"], Value::Null);
    assert_eq!(report["uid"], "Slurm Factory signing key");
    let err = stderr(o);
    assert!(err.contains(&format!("::add-mask::{pass}")), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains(pass));
    let secret_text = fs::read_to_string(&secret).unwrap();
    assert_no_key_material(o, &secret_text);
    assert_eq!(mode_of(&secret), 0o600);

    let data = dir.path().join("data");
    fs::write(&data, b"payload").unwrap();
    let out = sf_sign()
        .arg("file")
        .arg(&data)
        .arg("--key-file")
        .arg(&secret)
        .assert()
        .code(2);
    assert!(stderr(out.get_output()).contains("protected by a passphrase"));
    sf_sign()
        .arg("file")
        .arg(&data)
        .arg("--key-file")
        .arg(&secret)
        .env("GPG_PASSPHRASE", pass)
        .assert()
        .success();
    let sqv = StdCommand::new("sqv")
        .arg("--keyring")
        .arg(&public)
        .arg(dir.path().join("data.asc"))
        .arg(&data)
        .output()
        .unwrap();
    assert!(sqv.status.success(), "sqv: {}", stderr(&sqv));
    assert_eq!(
        String::from_utf8_lossy(&sqv.stdout).trim(),
        report["fingerprint"].as_str().unwrap()
    );
}

#[test]
fn the_exported_cert_of_a_gpg_key_has_its_fingerprint_and_verifies_sf_sign_signatures() {
    require_tool("sqv");
    let gpg = Gpg::new();
    let pass = "export passphrase";
    let fpr = gpg.generate("Build Signer <b@example.invalid>", "ed25519", pass);
    let secret = gpg.export_secret(&fpr, pass);
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.asc");
    let output = dir.path().join("github_output");
    fs::write(&output, "").unwrap();

    let out = sf_sign()
        .args(["key", "export", "--out"])
        .arg(&cert)
        .env("GPG_PRIVATE_KEY", base64(secret.as_bytes()))
        .env("GPG_PASSPHRASE", pass)
        .env("SF_SIGNING_FINGERPRINT", &fpr)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &output)
        .assert()
        .success();
    let o = out.get_output();
    let report = json(&o.stdout);
    assert_eq!(report["fingerprint"], fpr.as_str());
    assert_eq!(report["public_key"], cert.to_str().unwrap());
    assert_no_key_material(o, &secret);
    let outputs = parse_file_commands(&fs::read_to_string(&output).unwrap());
    assert_eq!(outputs["fingerprint"], fpr);
    assert_eq!(outputs["public-key"], cert.to_str().unwrap());

    // Public only, and gpg reads the same fingerprint from it.
    let cert_text = fs::read_to_string(&cert).unwrap();
    assert!(cert_text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    use openpgp::parse::Parse;
    let parsed = openpgp::Cert::from_bytes(cert_text.as_bytes()).unwrap();
    assert_eq!(parsed.fingerprint().to_hex(), fpr);
    assert!(
        !parsed.is_tsk(),
        "the exported cert holds secret key material"
    );
    let other = Gpg::new();
    other.import(&cert);
    let listed = other.run(&["--with-colons", "--list-keys", &fpr]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&format!("fpr:::::::::{fpr}:")));

    // A later job verifies the build job's signature against the shipped cert, pinned.
    let data = dir.path().join("slurm-25.11-noble-software.tar.gz");
    fs::write(&data, b"tarball".repeat(1000)).unwrap();
    sf_sign()
        .arg("file")
        .arg(&data)
        .env("GPG_PRIVATE_KEY", &secret)
        .env("GPG_PASSPHRASE", pass)
        .assert()
        .success();
    let out = sf_sign()
        .args(["verify", "file"])
        .arg(&data)
        .arg("--cert")
        .arg(&cert)
        .args(["--fingerprint", &fpr])
        .assert()
        .success();
    assert_eq!(json(&out.get_output().stdout)["signers"][0], fpr.as_str());
    let asc = dir.path().join("slurm-25.11-noble-software.tar.gz.asc");
    assert!(other.verifies(&asc, Some(&data)));
    let sqv = StdCommand::new("sqv")
        .arg("--keyring")
        .arg(&cert)
        .arg(&asc)
        .arg(&data)
        .output()
        .unwrap();
    assert!(sqv.status.success(), "sqv: {}", stderr(&sqv));
}

#[test]
fn existing_key_files_are_refused_with_exit_2_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("k.asc");
    let public = dir.path().join("k.pub");
    fs::write(&secret, "precious").unwrap();
    let out = sf_sign()
        .args(["key", "generate", "--out"])
        .arg(&secret)
        .assert()
        .code(2);
    let err = stderr(out.get_output());
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert!(out.get_output().stdout.is_empty());
    assert_eq!(fs::read_to_string(&secret).unwrap(), "precious");

    // An existing certificate file stops the secret key being written too.
    let fresh = dir.path().join("fresh.asc");
    fs::write(&public, "old cert").unwrap();
    sf_sign()
        .args(["key", "generate", "--out"])
        .arg(&fresh)
        .arg("--public-out")
        .arg(&public)
        .assert()
        .code(2);
    assert!(!fresh.exists());
    assert_eq!(fs::read_to_string(&public).unwrap(), "old cert");

    // Bad values and a missing folder: exit 2, nothing written.
    for args in [
        vec!["--expires", "3q"],
        vec!["--cipher", "dsa"],
        vec!["--uid", " "],
    ] {
        sf_sign()
            .args(["key", "generate", "--out"])
            .arg(&fresh)
            .args(&args)
            .assert()
            .code(2);
        assert!(!fresh.exists(), "{args:?}");
    }
    sf_sign()
        .args(["key", "generate", "--out"])
        .arg(dir.path().join("no/such/dir/k.asc"))
        .assert()
        .code(2);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // --force replaces, still owner-only.
    let out = sf_sign()
        .args(["key", "generate", "--force", "--out"])
        .arg(&secret)
        .assert()
        .success();
    assert!(fs::read_to_string(&secret)
        .unwrap()
        .starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
    assert_eq!(mode_of(&secret), 0o600);
    let fpr = json(&out.get_output().stdout)["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();

    // Export: an existing file, the key file itself and a wrong pin are refused.
    sf_sign()
        .args(["key", "export", "--key-file"])
        .arg(&secret)
        .arg("--out")
        .arg(&public)
        .assert()
        .code(2);
    assert_eq!(fs::read_to_string(&public).unwrap(), "old cert");
    sf_sign()
        .args(["key", "export", "--force", "--key-file"])
        .arg(&secret)
        .arg("--out")
        .arg(&secret)
        .assert()
        .code(2);
    assert!(fs::read_to_string(&secret).unwrap().contains("PRIVATE KEY"));
    let cert = dir.path().join("cert.asc");
    sf_sign()
        .args(["key", "export", "--key-file"])
        .arg(&secret)
        .arg("--out")
        .arg(&cert)
        .args(["--fingerprint", "DFB92630BCA5AB71"])
        .assert()
        .code(2);
    assert!(!cert.exists());
    sf_sign()
        .args(["key", "export", "--out"])
        .arg(&cert)
        .assert()
        .code(2);
    assert!(!cert.exists());
    let out = sf_sign()
        .args(["key", "export", "--key-file"])
        .arg(&secret)
        .arg("--out")
        .arg(&cert)
        .args(["--fingerprint", &fpr])
        .assert()
        .success();
    assert_eq!(json(&out.get_output().stdout)["fingerprint"], fpr.as_str());
}

#[test]
fn an_empty_file_is_not_signed_and_nothing_is_written() {
    let key = new_key();
    let dir = tempfile::tempdir().unwrap();
    let (full, empty) = (
        dir.path().join("full.tar.gz"),
        dir.path().join("empty.tar.gz"),
    );
    fs::write(&full, b"something").unwrap();
    fs::write(&empty, b"").unwrap();
    let out = sf_sign()
        .args(["file", full.to_str().unwrap(), empty.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .code(2);
    let err = stderr(out.get_output());
    assert!(
        err.contains("empty (0 bytes)") && err.contains("empty.tar.gz"),
        "{err}"
    );
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["empty.tar.gz", "full.tar.gz"],
        "no signature was written"
    );
}

/// Someone holding only the bucket (a file:// destination, or a copy of one) verifies with the
/// key it publishes in keys/, pinned to the fingerprint published beside it.
#[test]
fn verify_finds_the_key_the_bucket_publishes() {
    let key = new_key();
    let bucket = tempfile::tempdir().unwrap();
    let folder = bucket.path().join("builds/25.11/noble");
    fs::create_dir_all(&folder).unwrap();
    let file = folder.join("slurm-25.11-noble-software.tar.gz");
    fs::write(&file, b"a tarball, as far as signing goes").unwrap();
    sf_sign()
        .args(["file", file.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .success();
    sf_sign()
        .args(["sums", folder.to_str().unwrap()])
        .env("GPG_PRIVATE_KEY", &key.secret)
        .assert()
        .success();
    let verify_file = || {
        let mut c = sf_sign();
        c.args(["verify", "file", file.to_str().unwrap()])
            .env_remove("SF_SIGNING_FINGERPRINT");
        c
    };
    // No key anywhere: refused, saying where a key could come from.
    let out = verify_file().assert().code(2);
    assert!(stderr(out.get_output()).contains("keys/signing-key.asc"));

    fs::create_dir_all(bucket.path().join("keys")).unwrap();
    fs::copy(&key.public, bucket.path().join("keys/signing-key.asc")).unwrap();
    fs::write(
        bucket.path().join("keys/signing-key.fingerprint"),
        format!("{}\n", key.fpr),
    )
    .unwrap();
    let out = verify_file().assert().success();
    let v = json(&out.get_output().stdout);
    assert_eq!(v["items"][0]["signer"], key.fpr.as_str());
    let mut c = sf_sign();
    c.args(["verify", "sums", folder.to_str().unwrap()])
        .env_remove("SF_SIGNING_FINGERPRINT")
        .assert()
        .success();

    // A published fingerprint that is not the published key's: refused, not trusted.
    let other = new_key();
    fs::write(
        bucket.path().join("keys/signing-key.fingerprint"),
        format!("{}\n", other.fpr),
    )
    .unwrap();
    let out = verify_file().assert().code(2);
    assert!(
        stderr(out.get_output()).contains(&other.fpr),
        "{}",
        stderr(out.get_output())
    );
}
