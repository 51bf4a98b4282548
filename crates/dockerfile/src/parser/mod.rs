//! The Dockerfile parser: text in, [`Dockerfile`] out, read the way
//! BuildKit's dockerfile:1 frontend reads it.
//!
//! Two passes, as in BuildKit: first the whole file is split into
//! instruction nodes (directives, continuations, heredocs, line parsers),
//! then each node is checked and turned into an instruction. So a syntax
//! problem late in the file is reported before an unknown instruction
//! early in it, as `docker build` does.

mod checks;
pub(crate) mod flags;
mod instruction;
mod lines;
mod node;
mod words;

use crate::ast::{Dockerfile, FlagPosition, GlobalArg, Positions, Stage};
use crate::error::ParseError;
pub(crate) use checks::go_duration;
use instruction::Context;
use lines::{LogicalLine, Scanner};
use node::{parse_node, Node};

/// A node with where it came from and its heredoc bodies.
struct Parsed {
    node: Node,
    logical: LogicalLine,
    end_line: usize,
    bodies: Vec<String>,
}

/// Parse a Dockerfile, strictly: every error anywhere in the file fails it
/// (what `cairn parse` and linters want).
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    parse_with(text, false)
}

/// Parse a Dockerfile for a build: an unbalanced quote in the words of an
/// instruction inside a stage is kept in [`Instruction::deferred`] instead
/// of failing the parse, because BuildKit reports it only when it expands
/// that instruction, so `--target` may skip a stage with such a line.
///
/// [`Instruction::deferred`]: crate::Instruction::deferred
pub fn parse_deferring_quotes(text: &str) -> Result<Dockerfile, ParseError> {
    parse_with(text, true)
}

fn parse_with(text: &str, defer_quotes: bool) -> Result<Dockerfile, ParseError> {
    // BuildKit refuses an empty file before parsing it.
    if text.is_empty() {
        return Err(ParseError::new(1, 1, "the Dockerfile cannot be empty"));
    }
    let mut scanner = Scanner::new(text);
    let mut parsed = Vec::new();
    while let Some(logical) = scanner.next_logical()? {
        let escape = scanner.directives.escape;
        let node = parse_node(&logical.text, 0, escape).map_err(|e| {
            let (line, col) = scanner.position(&logical, e.offset);
            ParseError::new(line, col, e.message)
        })?;
        let mut bodies = Vec::with_capacity(node.heredocs.len());
        for spec in &node.heredocs {
            match scanner.read_heredoc(&spec.name, spec.chomp)? {
                Some(body) => bodies.push(body),
                None => {
                    let (line, col) = scanner.position(&logical, spec.offset);
                    return Err(ParseError::new(line, col, "unterminated heredoc"));
                }
            }
        }
        parsed.push(Parsed {
            node,
            logical,
            end_line: scanner.lines_read(),
            bodies,
        });
    }
    let last_line = parsed.last().map_or(1, |p| p.logical.start_line);
    if parsed.is_empty() {
        return Err(ParseError::new(
            scanner.lines_read().max(1),
            1,
            "file with no instructions",
        ));
    }
    let escape = scanner.directives.escape;
    let mut doc = Dockerfile {
        directives: scanner.directives.found.clone(),
        global_args: Vec::new(),
        stages: Vec::new(),
        escape,
    };
    for p in parsed {
        let reject = |(offset, message): (usize, String)| {
            let (line, col) = scanner.position(&p.logical, offset);
            ParseError::new(line, col, message)
        };
        let positions = positions_of(&scanner, &p);
        let ctx = Context {
            line: p.logical.start_line,
            end_line: p.end_line,
            escape,
        };
        if p.node.name == "from" {
            let (flags, words) = instruction::from_parts(&p.node, escape).map_err(reject)?;
            let name = instruction::stage_name(&words).map_err(reject)?;
            doc.stages.push(Stage {
                name,
                base: words.first().map(|w| w.text.clone()).unwrap_or_default(),
                platform: flags.get("platform").and_then(|v| v.first()).cloned(),
                line: ctx.line,
                end_line: ctx.end_line,
                flags,
                original: p.node.original.clone(),
                instructions: Vec::new(),
                positions,
            });
            continue;
        }
        let node_at = p.node.at;
        let deferred = match instruction::validate(&p.node, escape) {
            Err((offset, message))
                if defer_quotes
                    && !doc.stages.is_empty()
                    && instruction::is_quote_error(&message) =>
            {
                Some(reject((offset, message)))
            }
            _ => None,
        };
        let check = deferred.is_none();
        let mut inst = instruction::convert(p.node, p.bodies, &ctx, check).map_err(reject)?;
        inst.deferred = deferred;
        inst.positions = positions;
        match doc.stages.last_mut() {
            Some(stage) => stage.instructions.push(inst),
            None if inst.name == "arg" => {
                for pair in inst.pairs.iter().flatten() {
                    doc.global_args.push(GlobalArg {
                        name: pair.key.clone(),
                        default: pair.value.clone(),
                        line: inst.line,
                    });
                }
            }
            None => {
                return Err(ParseError::new(
                    ctx.line,
                    scanner.position(&p.logical, node_at).1,
                    "no build stage in current context",
                ))
            }
        }
    }
    if doc.stages.is_empty() {
        return Err(ParseError::new(
            last_line,
            1,
            "dockerfile contains no stages to build",
        ));
    }
    Ok(doc)
}

/// The keyword's and each flag's line and column, kept for the typed layer.
fn positions_of(scanner: &Scanner, p: &Parsed) -> Positions {
    let flags = p
        .node
        .flags
        .iter()
        .map(|w| {
            let (line, column) = scanner.position(&p.logical, w.offset);
            let body = w.text.strip_prefix("--").unwrap_or(&w.text);
            FlagPosition {
                name: body.split('=').next().unwrap_or(body).to_string(),
                line,
                column,
            }
        })
        .collect();
    Positions {
        column: scanner.position(&p.logical, p.node.at).1,
        flags,
    }
}
