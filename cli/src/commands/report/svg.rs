//! The run report's timeline as SVG, drawn with plotters (as cubed's `timeline.svg` and
//! lithops' `plot()`): one row per invocation from its start to its end, coloured by
//! function, its wait from launch to start as a thin line, hedges and relaunches
//! outlined and marked; the phases' ends as dashed lines; below, the memory panel: each
//! invocation's peak RSS over its time.

use cellmatrix::cost::Lambda;
use cellmatrix::report::{CopyKind, Fate, Invocation, Report};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width of the picture, px.
const WIDTH: u32 = 1400;
/// Height of the memory panel, px.
const MEMORY_PANEL: u32 = 260;

fn colour(f: Lambda) -> RGBColor {
    match f {
        Lambda::Driver => RGBColor(31, 119, 180),
        Lambda::Mapper => RGBColor(255, 127, 14),
        Lambda::Worker => RGBColor(44, 160, 44),
        Lambda::Reducer => RGBColor(148, 103, 189),
    }
}

/// The end an invocation is drawn to: its own, or its start plus what it is billed
/// for (a copy whose end is not recorded).
fn drawn_end(i: &Invocation) -> Option<f64> {
    let start = i.start_ms? as f64;
    Some(i.end_ms.map_or(start + i.billed_ms, |e| e as f64))
}

/// The timeline of `r` as an SVG document.
pub fn timeline(r: &Report) -> anyhow::Result<String> {
    let rows = r.invocations.len().max(1);
    let row_px = (900 / rows as u32).clamp(6, 22);
    let height = 120 + rows as u32 * row_px + MEMORY_PANEL;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let (top, bottom) = root.split_vertically(height - MEMORY_PANEL);
        let wall_s = r
            .invocations
            .iter()
            .filter_map(drawn_end)
            .fold(r.totals.wall_ms as f64, f64::max)
            / 1e3;
        let x_max = (wall_s * 1.1).max(0.001);
        let mut chart = ChartBuilder::on(&top)
            .caption(
                format!("cellmatrix run {}: {}", r.id, r.summary()),
                ("sans-serif", 15),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(190)
            .build_cartesian_2d(0f64..x_max, rows as f64..0f64)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("seconds since the request's start")
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(plot_error)?;
        // Each row's name beside its middle (the mesh would label round numbers).
        let label = ("sans-serif", (row_px as i32 - 2).clamp(7, 12))
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (n, i) in r.invocations.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(0.0, n as f64 + 0.5));
            top.draw(&Text::new(
                short(&i.name, i.attempt),
                (x - 6, y),
                label.clone(),
            ))
            .map_err(plot_error)?;
        }

        // The phases' ends, dashed, named at the top where there is room.
        let mut named_to = f64::NEG_INFINITY;
        for p in &r.totals.phases {
            let x = p.end_ms as f64 / 1e3;
            let room = x - named_to > x_max * 0.08;
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x, 0.0), (x, rows as f64)],
                    4,
                    4,
                    BLACK.mix(0.35).stroke_width(1),
                ))
                .map_err(plot_error)?;
            if room {
                named_to = x;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{} end", p.name),
                        (x, 0.0),
                        ("sans-serif", 10).into_font().color(&BLACK.mix(0.6)),
                    )))
                    .map_err(plot_error)?;
            }
        }

        for f in Lambda::ALL {
            let c = colour(f);
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(plot_error)?
                .label(f.name())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        }
        for (n, i) in r.invocations.iter().enumerate() {
            let y0 = n as f64 + 0.15;
            let y1 = n as f64 + 0.85;
            let mid = n as f64 + 0.5;
            let c = colour(i.function);
            if let (Some(l), Some(s)) = (i.launch_ms, i.start_ms)
                && s > l
            {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(l as f64 / 1e3, mid), (s as f64 / 1e3, mid)],
                        c.mix(0.5).stroke_width(1),
                    )))
                    .map_err(plot_error)?;
            }
            let (Some(start), Some(end)) = (i.start_ms, drawn_end(i)) else {
                // Launched, never started: a cross at its launch.
                if let Some(l) = i.launch_ms {
                    chart
                        .draw_series(std::iter::once(Cross::new(
                            (l as f64 / 1e3, mid),
                            4,
                            RED.stroke_width(2),
                        )))
                        .map_err(plot_error)?;
                }
                continue;
            };
            let (x0, x1) = (start as f64 / 1e3, (end / 1e3).max(start as f64 / 1e3));
            let fill = match i.fate {
                Fate::Done => c.filled(),
                _ => c.mix(0.35).filled(),
            };
            chart
                .draw_series(std::iter::once(Rectangle::new([(x0, y0), (x1, y1)], fill)))
                .map_err(plot_error)?;
            let mark = match i.copy {
                CopyKind::First => None,
                CopyKind::Hedge => Some(("H", RED)),
                CopyKind::Relaunch => Some(("R", BLACK)),
                CopyKind::Retry => Some(("E", MAGENTA)),
            };
            if let Some((letter, stroke)) = mark {
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, y0), (x1, y1)],
                        stroke.stroke_width(2),
                    )))
                    .map_err(plot_error)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        letter.to_string(),
                        (x1, y0),
                        ("sans-serif", (row_px as i32).clamp(8, 14))
                            .into_font()
                            .color(&stroke),
                    )))
                    .map_err(plot_error)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(plot_error)?;

        // The memory panel, on the same time axis.
        let peak_mib = r
            .invocations
            .iter()
            .filter_map(|i| i.peak_rss_bytes)
            .max()
            .unwrap_or(0) as f64
            / 1_048_576.0;
        let mut memory = ChartBuilder::on(&bottom)
            .caption(
                "peak resident memory per invocation (MiB; H hedge, R relaunch, E retry above)",
                ("sans-serif", 13),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(190)
            .build_cartesian_2d(0f64..x_max, 0f64..(peak_mib * 1.15).max(1.0))
            .map_err(plot_error)?;
        memory
            .configure_mesh()
            .x_desc("seconds since the request's start")
            .y_desc("MiB")
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(plot_error)?;
        for i in &r.invocations {
            let (Some(start), Some(end), Some(rss)) = (i.start_ms, drawn_end(i), i.peak_rss_bytes)
            else {
                continue;
            };
            let mib = rss as f64 / 1_048_576.0;
            memory
                .draw_series(std::iter::once(PathElement::new(
                    vec![(start as f64 / 1e3, mib), (end / 1e3, mib)],
                    colour(i.function).stroke_width(3),
                )))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// A row's label: the name, a task's id shortened, and the attempt.
fn short(name: &str, attempt: u32) -> String {
    let name = match name.strip_prefix("task-") {
        Some(id) if id.len() > 16 => format!("task-{}…{}", &id[..8], &id[id.len() - 6..]),
        _ => name.to_string(),
    };
    format!("{name}.{attempt}")
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing the timeline: {e}")
}
