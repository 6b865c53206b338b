//! What `Actions::set_outputs` / `export_env` write reads back, value for value, through a parser
//! written to the runner's documented format (sf-testkit), multi-line values included.

use sf_core::gha::Actions;
use sf_testkit::parse_file_commands;

/// Values that stress the format: line breaks of both kinds, a trailing newline, `=` and `<<`
/// (the two separators), and text that looks like our delimiters.
const VALUES: &[(&str, &str)] = &[
    ("plain", "18"),
    ("empty", ""),
    ("lf", "line one\nline two"),
    ("crlf", "line one\r\nline two\r\n"),
    ("lone_cr", "a\rb"),
    ("trailing_newline", "{\"include\":[]}\n"),
    ("blank_lines", "\n\nmiddle\n\n"),
    ("equals", "a=b=c"),
    ("heredoc_marker", "x<<EOF"),
    ("heredoc_marker_multi", "x<<EOF\nEOF\ny"),
    (
        "delimiter_like",
        "ghadelimiter_\nghadelimiter_0123456789abcdef0123456789abcdef\nend",
    ),
    ("delimiter_prefix_single", "ghadelimiter_x"),
];

#[test]
fn outputs_round_trip_through_the_runner_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("github_output");
    let gha = Actions {
        output_file: Some(file.clone()),
        ..Default::default()
    };
    gha.set_outputs(VALUES).unwrap();
    // A second write appends, and the later value wins, as in the runner.
    gha.set_output("plain", "19").unwrap();
    let parsed = parse_file_commands(&std::fs::read_to_string(&file).unwrap());
    for (name, value) in VALUES {
        let want = if *name == "plain" { "19" } else { value };
        assert_eq!(parsed[*name], want, "{name}");
    }
    assert_eq!(parsed.len(), VALUES.len());
}

#[test]
fn exported_env_round_trips_through_the_runner_format() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("github_env");
    let gha = Actions {
        env_file: Some(file.clone()),
        ..Default::default()
    };
    let vars: Vec<(String, &str)> = VALUES
        .iter()
        .map(|(n, v)| (format!("SF_{}", n.to_uppercase()), *v))
        .collect();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    gha.export_env(&pairs).unwrap();
    let parsed = parse_file_commands(&std::fs::read_to_string(&file).unwrap());
    for (name, value) in &pairs {
        assert_eq!(parsed[*name], *value, "{name}");
    }
    assert_eq!(parsed.len(), pairs.len());
}
