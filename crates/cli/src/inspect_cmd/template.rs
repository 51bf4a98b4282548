//! The Go-template subset `docker inspect --format` is used with: text and
//! `{{.Field.Sub}}`, `{{.}}`, `{{range PIPE}}…{{else}}…{{end}}`,
//! `{{if PIPE}}…{{else if PIPE}}…{{else}}…{{end}}`, and the functions
//! `json`, `index`, `join`, `len`, `print`, `println`, `upper`, `lower`;
//! `{{-`/`-}}` trim the spaces beside them. Fields match exactly, else
//! case-insensitively; a missing one prints `<no value>` as Go's templates
//! do for maps. Values print as Go prints them (`[a b]`, `map[k:v]`),
//! strings raw; truth is Go's (false, 0, "", empty list or map, nil are
//! false); `range` over a map walks its values in key order. A bad template
//! is an error naming the column (exit 2).

use crate::exit::CliError;
use serde_json::Value;

/// One argument of a command.
#[derive(Debug)]
enum Arg {
    /// `.`, `.A.B`: a path from the current value.
    Field(Vec<String>),
    Str(String),
    Int(i64),
}

/// `FUNC ARG...` or a lone argument.
#[derive(Debug)]
struct Cmd {
    col: usize,
    func: Option<String>,
    args: Vec<Arg>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Cmd),
    If(Vec<(Cmd, Vec<Node>)>, Vec<Node>),
    Range(Cmd, Vec<Node>, Vec<Node>),
}

pub struct Template(Vec<Node>);

const FUNCS: [&str; 8] = [
    "json", "index", "join", "len", "print", "println", "upper", "lower",
];

/// The `{{else…}}` or `{{end}}` that closed a list, with its column.
type Closer = Option<(usize, String)>;

/// A piece of the source: text, or an action's inside with its column.
enum Tok {
    Text(String),
    Action(usize, String),
}

struct Parser<'s> {
    src: &'s str,
    toks: std::vec::IntoIter<Tok>,
}

impl Template {
    pub fn parse(src: &str) -> Result<Template, CliError> {
        let toks = tokenize(src)?;
        let mut p = Parser {
            src,
            toks: toks.into_iter(),
        };
        let (nodes, end) = p.list()?;
        match end {
            None => Ok(Template(nodes)),
            Some((col, word)) => Err(bad(src, col, &format!("unexpected {{{{{word}}}}}"))),
        }
    }

    pub fn render(&self, v: &Value) -> Result<String, CliError> {
        let mut out = String::new();
        render(&self.0, v, &mut out)?;
        Ok(out)
    }
}

fn bad(src: &str, col: usize, why: &str) -> CliError {
    CliError::bad_input(format!("--format {src:?}: column {col}: {why}"))
}

/// Split into text and actions, applying `{{-` and `-}}` trimming.
fn tokenize(src: &str) -> Result<Vec<Tok>, CliError> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let at = src.len() - rest.len() + open;
        let col = src[..at].chars().count() + 1;
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[open + 2..];
        let close = find_close(after).ok_or_else(|| bad(src, col, "unclosed {{"))?;
        let mut inner = &after[..close];
        if let Some(i) = inner.strip_prefix("- ") {
            text = text.trim_end();
            inner = i;
        }
        trim_next = false;
        if let Some(i) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = i;
        }
        toks.push(Tok::Text(text.to_string()));
        toks.push(Tok::Action(col, inner.trim().to_string()));
        rest = &after[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    toks.push(Tok::Text(text.to_string()));
    Ok(toks)
}

/// Where the action's `}}` is, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'}' if !quoted && b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

impl Parser<'_> {
    /// Nodes up to `{{else…}}`/`{{end}}` (returned with its column) or the end.
    fn list(&mut self) -> Result<(Vec<Node>, Closer), CliError> {
        let mut nodes = Vec::new();
        while let Some(tok) = self.toks.next() {
            let (col, action) = match tok {
                Tok::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                    continue;
                }
                Tok::Action(col, a) => (col, a),
            };
            let (word, rest) = match action.split_once(char::is_whitespace) {
                Some((w, r)) => (w, r.trim()),
                None => (action.as_str(), ""),
            };
            match word {
                "end" | "else" => return Ok((nodes, Some((col, action.clone())))),
                "if" => nodes.push(self.if_node(col, rest)?),
                "range" => {
                    let over = self.cmd(col, rest)?;
                    let (body, end) = self.list()?;
                    let (els, end) = match end {
                        Some((_, e)) if e == "else" => self.list()?,
                        other => (Vec::new(), other),
                    };
                    self.expect_end(col, "range", end)?;
                    nodes.push(Node::Range(over, body, els));
                }
                "with" | "define" | "template" | "block" => {
                    return Err(bad(self.src, col, &format!("{word:?} is not supported")))
                }
                _ => nodes.push(Node::Print(self.cmd(col, &action)?)),
            }
        }
        Ok((nodes, None))
    }

    fn if_node(&mut self, col: usize, cond: &str) -> Result<Node, CliError> {
        let mut arms = vec![(self.cmd(col, cond)?, Vec::new())];
        loop {
            let (body, end) = self.list()?;
            if let Some(arm) = arms.last_mut() {
                arm.1 = body;
            }
            match end {
                Some((c, e)) if e.starts_with("else if ") => {
                    arms.push((self.cmd(c, e["else if ".len()..].trim())?, Vec::new()));
                }
                Some((_, e)) if e == "else" => {
                    let (els, end) = self.list()?;
                    self.expect_end(col, "if", end)?;
                    return Ok(Node::If(arms, els));
                }
                other => {
                    self.expect_end(col, "if", other)?;
                    return Ok(Node::If(arms, Vec::new()));
                }
            }
        }
    }

    fn expect_end(&self, col: usize, what: &str, end: Closer) -> Result<(), CliError> {
        match end {
            Some((_, e)) if e == "end" => Ok(()),
            Some((c, e)) => Err(bad(
                self.src,
                c,
                &format!("unexpected {{{{{e}}}}} in {what}"),
            )),
            None => Err(bad(
                self.src,
                col,
                &format!("{{{{{what}}}}} without {{{{end}}}}"),
            )),
        }
    }

    /// `FUNC ARG...` or one argument.
    fn cmd(&self, col: usize, text: &str) -> Result<Cmd, CliError> {
        let words = split_words(text).map_err(|why| bad(self.src, col, &why))?;
        let Some(first) = words.first() else {
            return Err(bad(self.src, col, "empty action"));
        };
        let (func, rest) = if first.starts_with(['.', '"']) || first.parse::<i64>().is_ok() {
            (None, &words[..])
        } else if FUNCS.contains(&first.as_str()) {
            (Some(first.clone()), &words[1..])
        } else {
            let why = format!("unknown function {first:?} (known: {})", FUNCS.join(", "));
            return Err(bad(self.src, col, &why));
        };
        let args = rest
            .iter()
            .map(|w| arg(w).map_err(|why| bad(self.src, col, &why)))
            .collect::<Result<Vec<_>, _>>()?;
        if func.is_none() && args.len() > 1 {
            return Err(bad(
                self.src,
                col,
                &format!("{text:?}: one value, or a function first"),
            ));
        }
        Ok(Cmd { col, func, args })
    }
}

/// Words of an action; a quoted string (Go escapes \" \\ \n \t) is one word.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::from("\"");
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(e @ ('"' | '\\')) => s.push(e),
                        other => return Err(format!("bad escape \\{}", other.unwrap_or(' '))),
                    },
                    Some(c) => s.push(c),
                }
            }
            words.push(s);
        } else if "()|$".contains(c) {
            return Err(format!("{c:?}: pipelines and variables are not supported"));
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek().filter(|c| !c.is_whitespace()) {
                w.push(c);
                chars.next();
            }
            words.push(w);
        }
    }
    Ok(words)
}

fn arg(word: &str) -> Result<Arg, String> {
    if let Some(s) = word.strip_prefix('"') {
        return Ok(Arg::Str(s.to_string()));
    }
    if let Ok(n) = word.parse() {
        return Ok(Arg::Int(n));
    }
    let path = word
        .strip_prefix('.')
        .ok_or_else(|| format!("{word:?}: a field starts with '.'"))?;
    Ok(Arg::Field(
        path.split('.')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    ))
}

fn render(nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), CliError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(cmd) => match eval(cmd, dot)? {
                None => out.push_str("<no value>"),
                Some(v) => out.push_str(&go_format(&v)),
            },
            Node::If(arms, els) => {
                let mut taken = false;
                for (cond, body) in arms {
                    if truth(eval(cond, dot)?.as_ref()) {
                        render(body, dot, out)?;
                        taken = true;
                        break;
                    }
                }
                if !taken {
                    render(els, dot, out)?;
                }
            }
            Node::Range(over, body, els) => {
                let items: Vec<Value> = match eval(over, dot)? {
                    Some(Value::Array(a)) => a,
                    Some(Value::Object(m)) => {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        keys.into_iter().map(|k| m[k].clone()).collect()
                    }
                    None | Some(Value::Null) => Vec::new(),
                    Some(other) => {
                        return Err(CliError::bad_input(format!(
                            "--format: column {}: range over {}, not a list or map",
                            over.col,
                            go_format(&other)
                        )))
                    }
                };
                if items.is_empty() {
                    render(els, dot, out)?;
                }
                for item in &items {
                    render(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

/// A command's value; `None`: a missing field.
fn eval(cmd: &Cmd, dot: &Value) -> Result<Option<Value>, CliError> {
    let fail = |why: String| CliError::bad_input(format!("--format: column {}: {why}", cmd.col));
    let vals: Vec<Option<Value>> = cmd
        .args
        .iter()
        .map(|a| match a {
            Arg::Field(path) => lookup(dot, path).cloned(),
            Arg::Str(s) => Some(Value::String(s.clone())),
            Arg::Int(n) => Some(Value::from(*n)),
        })
        .collect();
    let Some(func) = &cmd.func else {
        return Ok(vals.into_iter().next().flatten());
    };
    let one = || match vals.as_slice() {
        [v] => Ok(v.clone().unwrap_or(Value::Null)),
        _ => Err(fail(format!("{func} takes one argument"))),
    };
    let text = |v: &Option<Value>| v.as_ref().map_or("<no value>".into(), go_format);
    let out = match func.as_str() {
        "json" => Value::String(one()?.to_string()),
        "len" => match one()? {
            Value::Array(a) => Value::from(a.len()),
            Value::Object(m) => Value::from(m.len()),
            Value::String(s) => Value::from(s.len()),
            other => return Err(fail(format!("len of {}", go_format(&other)))),
        },
        "upper" => Value::String(go_format(&one()?).to_uppercase()),
        "lower" => Value::String(go_format(&one()?).to_lowercase()),
        "print" | "println" => {
            let mut s = vals.iter().map(text).collect::<Vec<_>>().join(" ");
            if func == "println" {
                s.push('\n');
            }
            Value::String(s)
        }
        "join" => match vals.as_slice() {
            [Some(Value::Array(a)), Some(Value::String(sep))] => {
                Value::String(a.iter().map(go_format).collect::<Vec<_>>().join(sep))
            }
            [None | Some(Value::Null), Some(Value::String(_))] => Value::String(String::new()),
            _ => return Err(fail("join takes a list and a separator string".into())),
        },
        "index" => return index(&vals, &fail),
        _ => return Err(fail(format!("unknown function {func:?}"))),
    };
    Ok(Some(out))
}

/// `index X K...`: X[K] for a map's key or a list's position; a missing
/// key is empty (docker's maps of strings give "").
fn index(
    vals: &[Option<Value>],
    fail: &dyn Fn(String) -> CliError,
) -> Result<Option<Value>, CliError> {
    let Some((first, keys)) = vals.split_first() else {
        return Err(fail("index takes a map or list and keys".into()));
    };
    let mut cur = first.clone().unwrap_or(Value::Null);
    for key in keys {
        cur = match (&cur, key) {
            (Value::Object(m), Some(Value::String(k))) => {
                m.get(k).cloned().unwrap_or(Value::String(String::new()))
            }
            (Value::Array(a), Some(Value::Number(n))) => {
                let i = n.as_u64().and_then(|i| a.get(i as usize));
                i.cloned()
                    .ok_or_else(|| fail(format!("index {n} out of range ({} items)", a.len())))?
            }
            (Value::Null, _) => Value::String(String::new()),
            (c, k) => {
                let k = k.as_ref().map_or("<no value>".into(), go_format);
                return Err(fail(format!("cannot index {} with {k}", go_format(c))));
            }
        };
    }
    Ok(Some(cur))
}

fn truth(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Bool(true)) => true,
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

    fn show(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    fn error(t: &str) -> String {
        match Template::parse(t) {
            Ok(_) => panic!("{t:?} parsed"),
            Err(e) => e.message().to_string(),
        }
    }

    #[test]
    fn fields_render_as_go_does() {
        let v = json!({"Id": "sha256:ab", "Config": {"Env": ["A=1", "B=2"], "User": ""}});
        let t = "{{.Id}} {{.config.Env}} {{json .Config.Env}} {{.Nope}}";
        assert_eq!(
            show(t, &v),
            "sha256:ab [A=1 B=2] [\"A=1\",\"B=2\"] <no value>"
        );
    }

    #[test]
    fn docker_style_examples() {
        let v = json!({
            "Config": {"Env": ["PATH=/bin", "A=1"], "Labels": {"a.b": "c", "z": "y"},
                       "Cmd": ["sh", "-c", "true"], "User": "", "ExposedPorts": null},
            "Names": ["x:1", "x:2"],
            "Size": 0,
        });
        let env = "{{range .Config.Env}}{{println .}}{{end}}";
        assert_eq!(show(env, &v), "PATH=/bin\nA=1\n");
        assert_eq!(show("{{index .Config.Labels \"a.b\"}}", &v), "c");
        assert_eq!(show("[{{index .Config.Labels \"none\"}}]", &v), "[]");
        assert_eq!(show("{{index .Names 1}}", &v), "x:2");
        assert_eq!(show("{{join .Config.Cmd \",\"}}", &v), "sh,-c,true");
        assert_eq!(
            show("{{json .Config.Labels}}", &v),
            r#"{"a.b":"c","z":"y"}"#
        );
        let user = "{{if .Config.User}}{{.Config.User}}{{else}}root{{end}}";
        assert_eq!(show(user, &v), "root");
        let size = "{{if .Size}}some{{else if .Names}}named{{else}}none{{end}}";
        assert_eq!(show(size, &v), "named");
        let labels = "{{range .Config.Labels}}{{.}};{{end}}";
        assert_eq!(show(labels, &v), "c;y;");
        let none = "{{range .Config.ExposedPorts}}port{{else}}no ports{{end}}";
        assert_eq!(show(none, &v), "no ports");
        let trimmed = "{{range .Names -}}\n  {{.}}\n{{- end}}";
        assert_eq!(show(trimmed, &v), "x:1x:2");
        assert_eq!(show("{{len .Names}} {{upper \"a\"}}", &v), "2 A");
    }

    #[test]
    fn bad_templates_name_the_column() {
        assert!(error("{{.Id").contains("column 1: unclosed"));
        assert!(
            error("ab {{upper .Id}}x{{nope .X}}").contains("column 18: unknown function \"nope\"")
        );
        assert!(error("{{range .X}}y").contains("column 1: {{range}} without {{end}}"));
        assert!(error("x{{end}}").contains("column 2: unexpected {{end}}"));
        assert!(error("{{if .A}}{{else}}{{else}}{{end}}").contains("column 18"));
        assert!(error("{{.A | json}}").contains("not supported"));
        assert!(error("{{index .A \"k}}").contains("unclosed"));
        let v = json!({"A": "text"});
        let e = Template::parse("  {{range .A}}{{end}}").unwrap().render(&v);
        assert!(e
            .err()
            .unwrap()
            .message()
            .contains("column 3: range over text"));
    }
}
