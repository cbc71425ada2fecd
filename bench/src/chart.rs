//! Charts of `daxkv-bench compare` (plotters, SVG and PNG): throughput per
//! workload per engine, and latency percentile curves.

use crate::compare::{CompareArgs, Measured, WORKLOADS};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::error::Error;
use std::path::PathBuf;

type Res<T> = Result<T, Box<dyn Error>>;

/// Fonts tried, in order, for the charts' text (plotters draws text with
/// a TrueType font it is given; none is bundled).
const FONTS: [&str; 6] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

fn register_font() -> Res<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let path = std::env::var("DAXKV_BENCH_FONT").ok().into_iter().chain(FONTS.iter().map(|s| s.to_string()));
        for p in path {
            if let Ok(bytes) = std::fs::read(&p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("no TrueType font found (apt-get install fonts-dejavu-core, or set DAXKV_BENCH_FONT=/path/to/font.ttf)"
            .to_string())
    })
    .clone()
    .map_err(Into::into)
}

fn color(label: &str, i: usize) -> RGBColor {
    match label {
        "daxkv-pmem" => RGBColor(214, 39, 40),
        "daxkv-volatile" => RGBColor(255, 127, 14),
        "daxkv-eadr" => RGBColor(148, 103, 189),
        "daxkv-msync" => RGBColor(140, 86, 75),
        "lmdb" => RGBColor(31, 119, 180),
        "redb" => RGBColor(44, 160, 44),
        _ => [RGBColor(127, 127, 127), RGBColor(23, 190, 207), RGBColor(188, 189, 34)][i % 3],
    }
}

fn human(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.0}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.0}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn human_ns(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.0} s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.0} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} µs", v / 1e3)
    } else {
        format!("{v:.0} ns")
    }
}

fn labels(m: &[Measured]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for x in m {
        if !v.contains(&x.label) {
            v.push(x.label.clone());
        }
    }
    v
}

fn legend_name(m: &[Measured], label: &str) -> String {
    let Some(r) = m.iter().find(|x| x.label == label) else { return label.into() };
    match r.row.get("engine").and_then(|e| e.as_str()) {
        Some("lmdb") => "LMDB (sync commit per put)".into(),
        Some("redb") => "redb (Durability::Immediate)".into(),
        _ => format!("daxkv ({})", r.row.get("backend").and_then(|b| b.as_str()).unwrap_or("?")),
    }
}

fn threads(m: &[Measured]) -> Vec<usize> {
    let mut t: Vec<usize> = m.iter().map(|x| x.threads).collect();
    t.sort_unstable();
    t.dedup();
    t
}

fn throughput<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, a: &CompareArgs, m: &[Measured]) -> Res<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let ths = threads(m);
    let title = format!(
        "daxkv-bench compare: throughput, {} keys, {} B keys, {} B values, {} s per case",
        a.keys, a.key_size, a.value_size, a.duration
    );
    let root = root.titled(&title, ("sans-serif", 26))?;
    let panels = root.split_evenly((ths.len().max(1), 1));
    let engines = labels(m);
    for (panel, &t) in panels.iter().zip(&ths) {
        let cases: Vec<&str> =
            WORKLOADS.iter().copied().filter(|c| m.iter().any(|x| x.case == *c && x.threads == t)).collect();
        let vals: Vec<f64> = m.iter().filter(|x| x.threads == t).map(|x| x.ops_per_sec).filter(|v| *v > 0.0).collect();
        let lo = vals.iter().copied().fold(f64::MAX, f64::min).max(1.0);
        let hi = vals.iter().copied().fold(1.0, f64::max);
        // Headroom above the tallest bar for the legend.
        let (ymin, ymax) = (10f64.powf(lo.log10().floor()), hi * 12.0);
        let w = cases.len() as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{t} thread{}", if t == 1 { "" } else { "s" }), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(90)
            .build_cartesian_2d(-0.5f64..w - 0.5, (ymin..ymax).log_scale())?;
        let names = cases.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("workload")
            .y_desc("throughput (operations/s, log scale)")
            .x_labels(cases.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() > 0.01 || i < 0.0 {
                    return String::new();
                }
                names.get(i as usize).map_or(String::new(), |s| s.to_string())
            })
            .y_label_formatter(&|y| human(*y))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        let k = engines.len().max(1) as f64;
        let bw = 0.84 / k;
        for (ei, label) in engines.iter().enumerate() {
            let c = color(label, ei);
            let bars: Vec<Rectangle<(f64, f64)>> = cases
                .iter()
                .enumerate()
                .filter_map(|(ci, case)| {
                    let v = m.iter().find(|x| &x.label == label && x.case == *case && x.threads == t)?.ops_per_sec;
                    let x0 = ci as f64 - 0.42 + ei as f64 * bw;
                    Some(Rectangle::new([(x0, ymin), (x0 + bw * 0.92, v.max(ymin))], c.filled()))
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(legend_name(m, label))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn latency<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, a: &CompareArgs, m: &[Measured]) -> Res<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let t = threads(m).first().copied().unwrap_or(1);
    let mut cases: Vec<&str> = ["fill-random", "read-random", "ycsb-a", "ycsb-e"]
        .into_iter()
        .filter(|c| m.iter().any(|x| x.case == *c && x.threads == t))
        .collect();
    if cases.is_empty() {
        cases =
            WORKLOADS.iter().copied().filter(|c| m.iter().any(|x| x.case == *c && x.threads == t)).take(4).collect();
    }
    let title = format!(
        "daxkv-bench compare: latency percentiles, {t} thread{}, {} keys, {} B keys, {} B values",
        if t == 1 { "" } else { "s" },
        a.keys,
        a.key_size,
        a.value_size
    );
    let root = root.titled(&title, ("sans-serif", 26))?;
    let panels = root.split_evenly((cases.len().div_ceil(2).max(1), 2));
    let engines = labels(m);
    for (panel, case) in panels.iter().zip(&cases) {
        let series: Vec<(usize, &Measured)> = engines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| m.iter().find(|x| &x.label == l && x.case == *case && x.threads == t).map(|x| (i, x)))
            .collect();
        let ys: Vec<f64> = series.iter().flat_map(|(_, x)| x.curve.iter().map(|p| p.1)).filter(|v| *v > 0.0).collect();
        let lo = ys.iter().copied().fold(f64::MAX, f64::min).max(1.0);
        let hi = ys.iter().copied().fold(1.0, f64::max);
        let (ymin, ymax) = (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()) * 1.01);
        let mut chart = ChartBuilder::on(panel)
            .caption(*case, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..5.05, (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile (%)")
            .y_desc("latency per operation (log scale)")
            .x_labels(6)
            .x_label_formatter(&|x| {
                let p = 100.0 * (1.0 - 10f64.powf(-x));
                if *x < 0.01 {
                    "0 (min)".into()
                } else if p < 99.0 {
                    format!("{p:.0}")
                } else {
                    format!("{p:.5}").trim_end_matches('0').trim_end_matches('.').to_string()
                }
            })
            .y_label_formatter(&|y| human_ns(*y))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()?;
        for (i, x) in series {
            let c = color(&x.label, i);
            chart
                .draw_series(LineSeries::new(x.curve.iter().map(|p| (p.0, p.1.max(ymin))), c.stroke_width(3)))?
                .label(legend_name(m, &x.label))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Draw every chart into `a.out`, as SVG and PNG; returns the files.
pub fn draw_all(a: &CompareArgs, m: &[Measured]) -> Res<Vec<PathBuf>> {
    if m.is_empty() {
        return Ok(Vec::new());
    }
    register_font()?;
    std::fs::create_dir_all(&a.out)?;
    let mut files = Vec::new();
    let panels = threads(m).len().max(1) as u32;
    let tsize = (1500u32, 80 + 470 * panels);
    let f = a.out.join("throughput.svg");
    throughput(SVGBackend::new(&f, tsize).into_drawing_area(), a, m)?;
    files.push(f);
    let f = a.out.join("throughput.png");
    throughput(BitMapBackend::new(&f, tsize).into_drawing_area(), a, m)?;
    files.push(f);
    let lsize = (1400u32, 1000u32);
    let f = a.out.join("latency.svg");
    latency(SVGBackend::new(&f, lsize).into_drawing_area(), a, m)?;
    files.push(f);
    let f = a.out.join("latency.png");
    latency(BitMapBackend::new(&f, lsize).into_drawing_area(), a, m)?;
    files.push(f);
    Ok(files)
}
