//! The stage graph: stages by name or index, and the stages a target needs in dependency
//! order (FROM, `COPY --from` and `RUN --mount from=` edges).

use crate::BuildError;
use cairn_dockerfile::expand::expand_word;
use cairn_dockerfile::Dockerfile;
use std::collections::BTreeMap;

/// A stage by name (case-insensitive) or index.
pub(crate) fn stage_index(doc: &Dockerfile, name: &str) -> Option<usize> {
    doc.stages
        .iter()
        .position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .or_else(|| name.parse::<usize>().ok().filter(|i| *i < doc.stages.len()))
}

/// The stages `target` needs, in dependency order (FROM and COPY --from
/// edges), and the stages each stage depends on.
pub(crate) fn needed_stages(
    doc: &Dockerfile,
    target: usize,
    globals: &BTreeMap<String, String>,
) -> Result<(Vec<usize>, Vec<Vec<usize>>), BuildError> {
    fn visit(
        doc: &Dockerfile,
        i: usize,
        globals: &BTreeMap<String, String>,
        state: &mut [u8],
        order: &mut Vec<usize>,
        edges: &mut [Vec<usize>],
    ) -> Result<(), BuildError> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                return Err(BuildError::input(format!(
                    "stage {i} depends on itself (a cycle between stages)"
                )))
            }
            _ => {}
        }
        state[i] = 1;
        let stage = &doc.stages[i];
        let base =
            expand_word(&stage.base, globals, doc.escape).unwrap_or_else(|_| stage.base.clone());
        let mut deps: Vec<String> = vec![base];
        // An instruction that does not type fails when its stage runs.
        for typed in stage.instructions.iter().filter_map(|i| i.typed().ok()) {
            deps.extend(typed.command.from_names().into_iter().map(String::from));
        }
        for dep in deps {
            // Only earlier stages can be named: `FROM x AS x` means the image x.
            if let Some(j) = stage_index(doc, &dep).filter(|j| *j < i) {
                visit(doc, j, globals, state, order, edges)?;
                edges[i].push(j);
            }
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    let mut state = vec![0u8; doc.stages.len()];
    let mut order = Vec::new();
    let mut edges = vec![Vec::new(); doc.stages.len()];
    visit(doc, target, globals, &mut state, &mut order, &mut edges)?;
    Ok((order, edges))
}
