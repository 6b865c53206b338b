//! A strict `{{name}}` template renderer for the Dockerfile, build-script and modulefile templates.
//!
//! Strict both ways: a placeholder without a value is an error, and so is a value the template
//! never uses, so a template and the code that fills it cannot drift apart unnoticed. Values are
//! inserted verbatim; callers pass only values validated for the target language.

use anyhow::{bail, Result};

/// Render `template` (named `name` in errors) with `vars`.
pub fn render(name: &str, template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut used = vec![false; vars.len()];
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            bail!("template {name}: an unclosed '{{{{'");
        };
        let key = after[..close].trim();
        let Some(i) = vars.iter().position(|(k, _)| *k == key) else {
            bail!("template {name}: no value for placeholder {{{{{key}}}}}");
        };
        used[i] = true;
        out.push_str(&vars[i].1);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        bail!("template {name}: value {:?} is never used", vars[i].0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_refuses_drift() {
        assert_eq!(
            render(
                "t",
                "a {{ x }} b {{y}}{{x}}",
                &[("x", "1".into()), ("y", "2".into())]
            )
            .unwrap(),
            "a 1 b 21"
        );
        assert!(render("t", "{{x}}", &[])
            .unwrap_err()
            .to_string()
            .contains("{{x}}"));
        assert!(render("t", "none", &[("x", "1".into())])
            .unwrap_err()
            .to_string()
            .contains("never used"));
        assert!(render("t", "{{x", &[("x", "1".into())]).is_err());
    }
}
