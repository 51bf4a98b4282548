//! Syntax nodes to AST instructions, with the checks BuildKit's
//! `instructions.ParseInstruction` makes (argument counts, flags, values).

use super::checks::{check_mount, go_duration, unknown_instruction};
use super::flags;
use super::node::{parse_heredoc_word, Args, Node};
use super::words::{open_quote, Word};
use crate::ast::{Flags, Form, Heredoc, Instruction, Pair};

/// A rejected instruction: byte offset in its logical line, and why.
pub(crate) type Reject = (usize, String);

/// What the driver knows about a node besides the node itself.
pub(crate) struct Context {
    pub line: usize,
    pub end_line: usize,
    pub escape: char,
}

/// Flatten node arguments the way BuildKit's `nodeArgs` does.
fn arg_texts(args: &Args) -> Vec<String> {
    match args {
        Args::Empty => Vec::new(),
        Args::Json(v) => v.clone(),
        Args::Text(w) => vec![w.text.clone()],
        Args::Words(ws) | Args::ArgWords(ws) => ws.iter().map(|w| w.text.clone()).collect(),
        Args::Pairs(p) => p.iter().map(|(k, v, _)| format!("{k}={v}")).collect(),
        Args::Health(typ, inner) => {
            let mut out = vec![typ.text.to_uppercase()];
            out.extend(arg_texts(inner));
            out
        }
        Args::Sub(child) => {
            let mut out = vec![child.name.clone()];
            out.extend(arg_texts(&child.args));
            out
        }
    }
}

fn form_of(node: &Node) -> Option<Form> {
    let jsonable = match node.name.as_str() {
        "run" | "cmd" | "entrypoint" | "shell" | "copy" | "add" | "volume" => true,
        "healthcheck" => {
            matches!(&node.args, Args::Health(t, _) if t.text.eq_ignore_ascii_case("cmd"))
        }
        _ => false,
    };
    match (jsonable, node.is_json()) {
        (false, _) => None,
        (true, true) => Some(Form::Exec),
        (true, false) => Some(Form::Shell),
    }
}

/// Go's `(?m)^\t+` removal (BuildKit's ChompHeredocContent).
fn chomp(body: &str) -> String {
    body.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// Convert a checked or unchecked (ONBUILD trigger) node, taking its
/// strings rather than copying them.
pub(crate) fn convert(
    node: Node,
    bodies: Vec<String>,
    ctx: &Context,
    check: bool,
) -> Result<Instruction, Reject> {
    let checked = if check {
        validate(&node, ctx.escape)?
    } else {
        None
    };
    let flags = match checked {
        Some(f) => f,
        None => node_flags(&node, check)?,
    };
    let form = form_of(&node);
    let expression = (node.name == "onbuild").then(|| onbuild_expression(&node, &bodies));
    let child_bodies = if expression.is_some() {
        bodies.clone()
    } else {
        Vec::new()
    };
    let heredocs: Vec<Heredoc> = node
        .heredocs
        .into_iter()
        .zip(bodies)
        .map(|(spec, body)| Heredoc {
            body: if spec.chomp { chomp(&body) } else { body },
            delimiter: spec.name,
            expand: spec.expand,
            strip_tabs: spec.chomp,
            fd: spec.fd,
        })
        .collect();
    let kv = matches!(node.name.as_str(), "env" | "label" | "arg");
    let (args, pairs, onbuild) = match node.args {
        Args::Pairs(p) => {
            let args = p.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
            let pairs = p
                .into_iter()
                .map(|(key, value, _)| Pair {
                    key,
                    value: Some(value),
                })
                .collect();
            (args, Some(pairs), None)
        }
        Args::ArgWords(ws) if node.name == "arg" => {
            let pairs = ws
                .iter()
                .map(|w| match w.text.split_once('=') {
                    Some((k, v)) => Pair {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    },
                    None => Pair {
                        key: w.text.clone(),
                        value: None,
                    },
                })
                .collect();
            (ws.into_iter().map(|w| w.text).collect(), Some(pairs), None)
        }
        Args::Sub(child) => {
            let inner = convert(*child, child_bodies, ctx, false)?;
            (
                expression.into_iter().collect(),
                None,
                Some(Box::new(inner)),
            )
        }
        other => (into_texts(other), kv.then(Vec::new), None),
    };
    Ok(Instruction {
        name: node.name,
        line: ctx.line,
        end_line: ctx.end_line,
        flags,
        form,
        args,
        pairs,
        heredocs,
        original: node.original,
        onbuild,
        deferred: None,
        positions: Default::default(),
    })
}

/// `arg_texts` for an owned value: moves the strings.
fn into_texts(args: Args) -> Vec<String> {
    match args {
        Args::Json(v) => v,
        Args::Text(w) => vec![w.text],
        Args::Words(ws) | Args::ArgWords(ws) => ws.into_iter().map(|w| w.text).collect(),
        other => arg_texts(&other),
    }
}

/// The trigger text an image config stores: the line without `ONBUILD`,
/// with heredoc bodies and terminators appended as BuildKit does.
fn onbuild_expression(node: &Node, bodies: &[String]) -> String {
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let text = node.original.trim_start_matches(is_s);
    let mut out =
        if text.len() >= 7 && text.is_char_boundary(7) && text[..7].eq_ignore_ascii_case("onbuild")
        {
            text[7..].trim_start_matches(is_s).to_string()
        } else {
            node.original.clone()
        };
    for (spec, body) in node.heredocs.iter().zip(bodies) {
        out.push('\n');
        out.push_str(body);
        out.push_str(&spec.name);
    }
    out
}

fn node_flags(node: &Node, check: bool) -> Result<Flags, Reject> {
    let unparsed = node.name == "stopsignal"
        || matches!(&node.args, Args::Health(t, _) if t.text.eq_ignore_ascii_case("none"));
    if unparsed {
        return Ok(flags::raw(&node.flags));
    }
    match flags::parse(&node.flags, flags::spec(&node.name)) {
        Ok(f) => Ok(f),
        Err(e) if check => Err(e),
        Err(_) => Ok(flags::raw(&node.flags)),
    }
}

fn arg_count(args: &Args) -> usize {
    match args {
        Args::Empty => 0,
        Args::Json(v) => v.len(),
        Args::Text(_) => 1,
        Args::Words(ws) | Args::ArgWords(ws) => ws.len(),
        Args::Pairs(p) => p.len(),
        Args::Health(_, inner) => 1 + arg_count(inner),
        Args::Sub(child) => 1 + arg_count(&child.args),
    }
}

fn require(cond: bool, at: usize, message: String) -> Result<(), Reject> {
    if cond {
        Ok(())
    } else {
        Err((at, message))
    }
}

fn at_least_one(name: &str) -> String {
    format!("{name} requires at least one argument")
}

fn exactly_one(name: &str) -> String {
    format!("{name} requires exactly one argument")
}

fn check_flags(node: &Node) -> Result<Flags, Reject> {
    flags::parse(&node.flags, flags::spec(&node.name))
}

/// The checks of BuildKit's per-instruction parse functions, in their order.
pub(crate) fn validate(node: &Node, escape: char) -> Result<Option<Flags>, Reject> {
    let mut checked = None;
    let upper = node.name.to_uppercase();
    let n = arg_count(&node.args);
    // With no arguments, point at the instruction itself.
    let at = if node.args == Args::Empty {
        node.at
    } else {
        node.args_at
    };
    match node.name.as_str() {
        "env" | "label" => {
            checked = Some(check_flags(node)?);
            let Args::Pairs(pairs) = &node.args else {
                return Err((at, at_least_one(&upper)));
            };
            for (k, v, off) in pairs {
                require(
                    !k.is_empty(),
                    *off,
                    format!("{upper} names can not be blank"),
                )?;
                quoted_ok(k, *off, escape)?;
                quoted_ok(v, *off, escape)?;
            }
        }
        "maintainer" => {
            require(n == 1, at, exactly_one(&upper))?;
            checked = Some(check_flags(node)?);
        }
        "add" | "copy" => {
            require(
                n >= 2,
                at,
                format!("{upper} requires at least two arguments, but only one was provided. Destination could not be determined."),
            )?;
            checked = Some(check_flags(node)?);
            let words = arg_words(node);
            if let Some(dest) = words.last() {
                if !node.is_json() && parse_heredoc_word(&dest.text).is_some() {
                    return Err((
                        dest.offset,
                        format!("{upper} cannot accept a heredoc as a destination"),
                    ));
                }
            }
            for w in &words {
                if node.is_json() || parse_heredoc_word(&w.text).is_none() {
                    quoted_ok(&w.text, w.offset, escape)?;
                }
            }
        }
        "onbuild" => {
            require(n >= 1, at, at_least_one(&upper))?;
            checked = Some(check_flags(node)?);
            if let Args::Sub(child) = &node.args {
                let trigger = child.name.to_uppercase();
                match trigger.as_str() {
                    "ONBUILD" => {
                        return Err((
                            child.at,
                            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                        ))
                    }
                    "MAINTAINER" | "FROM" => {
                        return Err((
                            child.at,
                            format!("{trigger} isn't allowed as an ONBUILD trigger"),
                        ));
                    }
                    _ => {}
                }
            }
        }
        "workdir" | "user" | "stopsignal" => {
            require(n == 1, at, exactly_one(&upper))?;
            if node.name != "stopsignal" {
                checked = Some(check_flags(node)?);
            }
            for w in arg_words(node) {
                quoted_ok(&w.text, w.offset, escape)?;
            }
        }
        "run" => {
            let f = check_flags(node)?;
            if let Some(mode) = f.get("network").and_then(|v| v.first()) {
                require(
                    matches!(mode.as_str(), "default" | "none" | "host"),
                    at,
                    format!("unsupported network mode {mode:?}"),
                )?;
            }
            if let Some(mode) = f.get("security").and_then(|v| v.first()) {
                require(
                    matches!(mode.as_str(), "sandbox" | "insecure"),
                    at,
                    format!("unsupported security mode {mode:?}"),
                )?;
            }
            for m in f.get("mount").into_iter().flatten() {
                check_mount(m).map_err(|e| (at, e))?;
            }
            checked = Some(f);
        }
        "cmd" | "entrypoint" => {
            checked = Some(check_flags(node)?);
        }
        "healthcheck" => checked = validate_healthcheck(node)?,
        "expose" | "volume" => {
            require(n >= 1, at, at_least_one(&upper))?;
            checked = Some(check_flags(node)?);
            for w in arg_words(node) {
                if node.name == "volume" {
                    require(
                        !w.text.trim().is_empty(),
                        w.offset,
                        "VOLUME specified can not be an empty string".into(),
                    )?;
                }
                quoted_ok(&w.text, w.offset, escape)?;
            }
        }
        "arg" => {
            require(n >= 1, at, at_least_one(&upper))?;
            checked = Some(check_flags(node)?);
            for w in arg_words(node) {
                if let Some((k, _)) = w.text.split_once('=') {
                    require(!k.is_empty(), w.offset, "ARG names can not be blank".into())?;
                }
                quoted_ok(&w.text, w.offset, escape)?;
            }
        }
        "shell" => {
            checked = Some(check_flags(node)?);
            require(n >= 1, at, at_least_one(&upper))?;
            require(
                node.is_json(),
                at,
                "SHELL requires the arguments to be in JSON form".into(),
            )?;
        }
        "from" => {}
        _ => {
            let written = node
                .original
                .trim_start()
                .split(char::is_whitespace)
                .next()
                .unwrap_or("");
            return Err((node.at, unknown_instruction(written)));
        }
    }
    Ok(checked)
}

/// The words of an instruction with their offsets (JSON elements point at
/// the start of the array).
fn arg_words(node: &Node) -> Vec<Word> {
    match &node.args {
        Args::Words(ws) | Args::ArgWords(ws) => ws.clone(),
        Args::Text(w) => vec![w.clone()],
        Args::Json(v) => v
            .iter()
            .map(|s| Word {
                text: s.clone(),
                offset: node.args_at,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// BuildKit expands these words with its shell lexer, which rejects an
/// unterminated quote; report it here with its position.
fn quoted_ok(word: &str, at: usize, escape: char) -> Result<(), Reject> {
    match open_quote(word, escape) {
        None => Ok(()),
        Some(q) => Err((
            at,
            format!(
                "{QUOTE_ERROR} {}-quote",
                if q == '"' { "double" } else { "single" }
            ),
        )),
    }
}

/// How the shell lexer's unbalanced-quote error starts.
const QUOTE_ERROR: &str = "unexpected end of statement while looking for matching";

/// Is this rejection an unbalanced quote (an error of word expansion,
/// which BuildKit raises only for instructions it expands)?
pub(crate) fn is_quote_error(message: &str) -> bool {
    message.starts_with(QUOTE_ERROR)
}

fn validate_healthcheck(node: &Node) -> Result<Option<Flags>, Reject> {
    let at = node.args_at;
    let Args::Health(typ, inner) = &node.args else {
        return Err((node.at, at_least_one("HEALTHCHECK")));
    };
    let kind = typ.text.to_uppercase();
    if kind == "NONE" {
        return require(
            arg_count(inner) == 0,
            at,
            "HEALTHCHECK NONE takes no arguments".into(),
        )
        .map(|_| None);
    }
    let f = check_flags(node)?;
    if kind != "CMD" {
        return Err((
            typ.offset,
            format!("Unknown type {:?} in HEALTHCHECK (try CMD)", kind),
        ));
    }
    require(
        arg_count(inner) > 0,
        at,
        "Missing command after HEALTHCHECK CMD".into(),
    )?;
    for name in ["interval", "timeout", "start-period", "start-interval"] {
        if let Some(v) = f.get(name).and_then(|v| v.first()) {
            if v.is_empty() {
                continue;
            }
            let nanos =
                go_duration(v).ok_or_else(|| (at, format!("time: invalid duration {v:?}")))?;
            if nanos != 0 && nanos < 1_000_000 {
                return Err((at, format!("Interval {name:?} cannot be less than 1ms")));
            }
        }
    }
    if let Some(v) = f.get("retries").and_then(|v| v.first()) {
        if !v.is_empty() {
            let n: i64 = v
                .parse()
                .ok()
                .filter(|n: &i64| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    (
                        at,
                        format!("strconv.ParseInt: parsing {v:?}: invalid syntax"),
                    )
                })?;
            require(n >= 0, at, format!("--retries cannot be negative ({n})"))?;
        }
    }
    Ok(Some(f))
}

/// Check the name of a FROM's `AS` clause.
pub(crate) fn stage_name(args: &[Word]) -> Result<Option<String>, Reject> {
    match args {
        [_] => Ok(None),
        [_, as_kw, name] if as_kw.text.eq_ignore_ascii_case("as") => {
            let lower = name.text.to_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if valid {
                Ok(Some(lower))
            } else {
                Err((
                    name.offset,
                    format!(
                        "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                        name.text
                    ),
                ))
            }
        }
        _ => Err((0, "FROM requires either one or three arguments".into())),
    }
}

/// Check the FROM line's flags and words.
pub(crate) fn from_parts(node: &Node, escape: char) -> Result<(Flags, Vec<Word>), Reject> {
    let words = match &node.args {
        Args::Words(ws) => ws.clone(),
        _ => Vec::new(),
    };
    let fallback = if words.is_empty() {
        node.at
    } else {
        node.args_at
    };
    stage_name(&words).map_err(|(off, m)| (if off == 0 { fallback } else { off }, m))?;
    let flags = flags::parse(&node.flags, flags::spec("from"))?;
    for w in &words {
        quoted_ok(&w.text, w.offset, escape)?;
    }
    Ok((flags, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chomp_strips_leading_tabs_per_line() {
        assert_eq!(chomp("\t\ta\n\tb\n c\n"), "a\nb\n c\n");
    }
}
