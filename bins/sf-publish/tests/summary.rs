//! One cell's records joined in the deployment summary: a build record (written as sf-build
//! writes it), sf-sign run for the cell, the real sf-publish binary publishing for it, and
//! sf-summary's report and Markdown over the lot. The signing fingerprint and the CDN URL come
//! from different steps; the cell id in each record is what puts them in one row.

use std::path::Path;

use sf_core::gha::Actions;
use sf_core::layout::Layout;
use sf_core::matrix::{ListArg, Pipeline, Selection, SupportMatrix};
use sf_core::record::{Artifact, Recorder};

#[path = "support/common.rs"]
mod common;

fn sign(results: &Path, cell: &str, args: &[&str]) {
    use clap::Parser;
    let mut argv = vec!["sf-sign", "--results-dir", results.to_str().unwrap()];
    argv.extend(["--cell-id", cell]);
    argv.extend(args);
    let cli = sf_sign::Cli::try_parse_from(argv).unwrap();
    let secrets = sf_sign::keys::SecretEnv {
        private_key: None,
        passphrase: None,
    };
    sf_sign::run(cli, &Actions::default(), &secrets).unwrap();
}

#[test]
fn the_summary_row_of_a_cell_has_its_fingerprint_and_cdn_url() {
    let tmp = tempfile::tempdir().unwrap();
    let (results, dist, bucket) = (
        tmp.path().join("results"),
        tmp.path().join("dist"),
        tmp.path().join("bucket"),
    );
    std::fs::create_dir_all(&dist).unwrap();
    let dest = format!("file://{}", bucket.display());
    let m = SupportMatrix::embedded();
    let layout = Layout::new(Some(&dest), None, Default::default()).unwrap();
    let key = Selection {
        slurm_versions: ListArg::Named(vec!["25.11".into()]),
        toolchains: ListArg::Named(vec!["noble".into()]),
        ..Default::default()
    }
    .expand(&m, Pipeline::Tarball)
    .unwrap()
    .remove(0);
    let cell = layout.cell(&m, &key);
    let id = cell.id.clone();
    assert_eq!(id, "tarball-25.11-noble-amd64-cpu");

    // The build: its record as sf-build leaves it, with the cell and the tarball.
    let tarball = dist.join("slurm-25.11-noble-software.tar.gz");
    std::fs::write(
        &tarball,
        common::cell_tarball(
            &common::buildinfo_for("25.11", "noble", "amd64", false),
            1024,
        ),
    )
    .unwrap();
    let sha = sf_store::sha256_file(&tarball).unwrap();
    let mut rec = Recorder::start("sf-build pack");
    rec.record.cell = Some(id.clone());
    rec.record.cell_data = Some(serde_json::to_value(&cell).unwrap());
    rec.record.artifacts.push(Artifact {
        kind: "tarball".into(),
        path: Some(tarball.display().to_string()),
        size: Some(std::fs::metadata(&tarball).unwrap().len()),
        sha256: Some(sha.clone()),
        ..Default::default()
    });
    rec.finish(Some(&results)).unwrap();

    // Signing for the cell (the key itself is made without one: it is not the cell's work).
    let keyfile = tmp.path().join("secret.asc");
    let public = tmp.path().join("public.asc");
    {
        use clap::Parser;
        let cli = sf_sign::Cli::try_parse_from([
            "sf-sign",
            "key",
            "generate",
            "--out",
            keyfile.to_str().unwrap(),
            "--public-out",
            public.to_str().unwrap(),
        ])
        .unwrap();
        let secrets = sf_sign::keys::SecretEnv {
            private_key: None,
            passphrase: None,
        };
        sf_sign::run(cli, &Actions::default(), &secrets).unwrap();
    }
    let k = keyfile.to_str().unwrap();
    sign(
        &results,
        &id,
        &["file", tarball.to_str().unwrap(), "--key-file", k],
    );
    sign(
        &results,
        &id,
        &["sums", dist.to_str().unwrap(), "--key-file", k],
    );

    // Publishing for the cell, with the cell id from the job's environment as the workflows set it.
    common::sf_publish()
        .env("SF_CELL_ID", &id)
        .env("SF_RESULTS_DIR", &results)
        .arg("tarball")
        .arg(&tarball)
        .arg(&dest)
        .arg("--create")
        .arg("--cert")
        .arg(&public)
        .assert()
        .success();

    let records = sf_summary::records::gather(std::slice::from_ref(&results))
        .unwrap()
        .records;
    let steps: Vec<(&str, Option<&str>)> = records
        .iter()
        .map(|r| (r.record.step.as_str(), r.record.cell.as_deref()))
        .collect();
    assert_eq!(records.len(), 4, "{steps:?}");
    let report = sf_summary::report::build(&records);
    assert_eq!(report.totals.cells, 1, "{steps:?}");
    assert!(report.run_steps.is_empty(), "{steps:?}");
    let row = &report.pipelines[0].cells[0];
    assert_eq!(row.id, id);
    assert_eq!(row.sha256.as_deref(), Some(sha.as_str()));
    let fingerprint = row.signed_by.clone().expect("the signer's fingerprint");
    let cdn = cell.tarball.as_ref().unwrap().cdn_url.clone();
    assert!(row.cdn_urls.contains(&cdn), "{:?}", row.cdn_urls);
    let row_steps: Vec<&str> = row.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(row_steps.len(), 4, "{row_steps:?}");

    // In the Markdown: one table row with the cell, its fingerprint and its CDN link.
    let md = sf_summary::markdown::render(&report, "Deployment", 100);
    let line = md
        .lines()
        .find(|l| l.contains(&format!("`{id}`")))
        .unwrap_or_else(|| panic!("no row for {id}: {md}"));
    assert!(line.contains(&fingerprint), "{line}");
    assert!(line.contains(&cdn), "{line}");
}
