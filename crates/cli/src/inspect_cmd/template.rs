//! The Go-template subset `docker inspect --format` is mostly used with:
//! text with `{{.Field.Sub}}` actions, `{{.}}`, and `{{json .Field}}`.
//! Fields match exactly, else case-insensitively; a missing one prints
//! `<no value>` as Go's templates do for maps. Values print as Go prints
//! them (`[a b]`, `map[k:v]`), strings raw.

use crate::exit::CliError;
use serde_json::Value;

enum Part {
    Text(String),
    Field { json: bool, path: Vec<String> },
}

pub struct Template(Vec<Part>);

impl Template {
    pub fn parse(src: &str) -> Result<Template, CliError> {
        let bad = |why: String| CliError::bad_input(format!("--format {src:?}: {why}"));
        let mut parts = Vec::new();
        let mut rest = src;
        while let Some(open) = rest.find("{{") {
            parts.push(Part::Text(rest[..open].to_string()));
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                bad(format!(
                    "unclosed {{{{ at byte {}",
                    src.len() - rest.len() + open
                ))
            })?;
            let action = after[..close].trim().trim_matches('-').trim();
            let (json, expr) = match action.split_once(char::is_whitespace) {
                Some(("json", e)) => (true, e.trim()),
                Some((f, _)) => return Err(bad(format!("unknown function {f:?} (only json)"))),
                None => (false, action),
            };
            let path = expr
                .strip_prefix('.')
                .ok_or_else(|| bad(format!("{expr:?}: a field starts with '.'")))?;
            let path = path
                .split('.')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            parts.push(Part::Field { json, path });
            rest = &after[close + 2..];
        }
        parts.push(Part::Text(rest.to_string()));
        Ok(Template(parts))
    }

    pub fn render(&self, v: &Value) -> Result<String, CliError> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field { json, path } => match lookup(v, path) {
                    None => out.push_str("<no value>"),
                    Some(found) if *json => out.push_str(&found.to_string()),
                    Some(found) => out.push_str(&go_format(found)),
                },
            }
        }
        Ok(out)
    }
}

fn lookup<'v>(mut v: &'v Value, path: &[String]) -> Option<&'v Value> {
    for key in path {
        v = match v {
            Value::Object(m) => m.get(key).or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, x)| x)
            })?,
            Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

fn go_format(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_format).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let items: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_format(&m[k])))
                .collect();
            format!("map[{}]", items.join(" "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_render_as_go_does() {
        let v =
            json!({"Id": "sha256:ab", "Config": {"config": {"Env": ["A=1", "B=2"], "User": ""}}});
        let t =
            Template::parse("{{.Id}} {{.config.Config.Env}} {{json .Config.config.Env}} {{.Nope}}")
                .unwrap();
        assert_eq!(
            t.render(&v).unwrap(),
            "sha256:ab [A=1 B=2] [\"A=1\",\"B=2\"] <no value>"
        );
        assert!(Template::parse("{{.Id").is_err());
        assert!(Template::parse("{{upper .Id}}").is_err());
    }
}
