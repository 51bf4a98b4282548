//! A tiny driver for scripts: `layer_tool commit DIR OUT [zstd|gzip|none]`
//! writes DIR as a layer; `layer_tool extract BLOB DEST` extracts one.
//! benches/layer-baseline.sh uses it to measure peak memory with /usr/bin/time.

use cairn_layer::{
    extract_layer, write_layer, Compression, DiffSource, ExtractOptions, LayerOptions,
};
use std::io::BufWriter;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("commit") if args.len() >= 4 => {
            commit(&args[2], &args[3], args.get(4).map(String::as_str))
        }
        Some("extract") if args.len() == 4 => extract(&args[2], &args[3]),
        _ => Err("usage: layer_tool commit DIR OUT [zstd|gzip|none] | extract BLOB DEST".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layer_tool: {e}");
            ExitCode::from(1)
        }
    }
}

fn commit(
    dir: &str,
    out: &str,
    compression: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let compression: Compression = compression.unwrap_or("zstd").parse()?;
    let file = std::fs::File::create(out)?;
    let threads = std::env::var("CAIRN_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let opts = LayerOptions {
        threads,
        compression,
        ..LayerOptions::default()
    };
    let info = write_layer(
        DiffSource::Full(Path::new(dir)),
        &opts,
        BufWriter::with_capacity(1 << 20, file),
    )?;
    println!(
        "diff_id {} size {} digest {} compressed {} entries {}",
        info.diff_id, info.uncompressed_size, info.digest, info.size, info.entries
    );
    Ok(())
}

fn extract(blob: &str, dest: &str) -> Result<(), Box<dyn std::error::Error>> {
    let file = std::fs::File::open(blob)?;
    let stats = extract_layer(file, Path::new(dest), &ExtractOptions::default())?;
    println!(
        "diff_id {} size {} entries {}",
        stats.diff_id, stats.uncompressed_size, stats.entries
    );
    Ok(())
}
