//! `netwatch top`'s screen, drawn with ratatui: header and sparkline, blind spots, the table
//! of sources, the alerts and events panes, the footer of keys, and the details of a row.
//! Every string from the wire goes through [`escape`]. Without colour (`NO_COLOR`) emphasis is
//! bold and reverse video only.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row as TableRow, Sparkline, Table, TableState},
};
use serde_json::Value;

use super::{Column, Model, Row};
use crate::report::escape;

/// Colours, or none.
#[derive(Clone, Copy, Debug)]
pub struct Palette {
    /// `NO_COLOR` is set.
    pub plain: bool,
}

impl Palette {
    fn fg(self, color: Color) -> Style {
        if self.plain {
            Style::default()
        } else {
            Style::default().fg(color)
        }
    }

    /// What must catch the eye: red, or bold and reversed without colour.
    fn alarm(self) -> Style {
        if self.plain {
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        }
    }

    fn selected(self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
}

/// `count` with a unit prefix: 1.2k, 3.4M.
pub fn si(count: f64) -> String {
    let (value, unit) = if count >= 1e9 {
        (count / 1e9, "G")
    } else if count >= 1e6 {
        (count / 1e6, "M")
    } else if count >= 1e3 {
        (count / 1e3, "k")
    } else {
        return format!("{count:.0}");
    };
    format!("{value:.1}{unit}")
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s).into_owned(),
        Value::Null => String::from("-"),
        other => escape(&other.to_string()).into_owned(),
    }
}

/// The time of day of an RFC 3339 record time (`HH:MM:SS`).
fn clock(record: &Value) -> String {
    record["time"]
        .as_str()
        .and_then(|time| time.get(11..19))
        .unwrap_or("--:--:--")
        .to_owned()
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, model: &Model, palette: Palette) {
    let area = frame.area();
    let panes = if area.height >= 30 { 7 } else { 4 };
    let [header, spark, blind, table, lower, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(panes),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, model, palette);
    let pps: Vec<u64> = model
        .interface()
        .map(|(_, i)| i.pps.iter().copied().collect())
        .unwrap_or_default();
    let start = pps.len().saturating_sub(usize::from(spark.width));
    frame.render_widget(
        Sparkline::default()
            .data(&pps[start..])
            .style(palette.fg(Color::Cyan)),
        spark,
    );
    draw_blind_spots(frame, blind, model, palette);
    let rows = model.rows();
    draw_table(frame, table, model, &rows, palette);
    let [alerts, events] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(lower);
    draw_alerts(frame, alerts, model, palette);
    draw_events(frame, events, model);
    draw_footer(frame, footer, model, palette);
    if model.details
        && let Some(row) = rows.get(model.selected.min(rows.len().saturating_sub(1)))
    {
        draw_details(frame, area, model, row, palette);
    }
}

fn draw_header(frame: &mut Frame<'_>, area: Rect, model: &Model, palette: Palette) {
    let mut spans = vec![Span::styled(
        "netwatch top ",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    // States first: on a narrow terminal the end of the line is cut.
    if model.gone {
        spans.push(Span::styled("| DAEMON STOPPED ", palette.alarm()));
    }
    if model.paused {
        spans.push(Span::styled("| PAUSED ", palette.alarm()));
    }
    match model.interface() {
        Some((name, interface)) => {
            let others = model.interfaces.len();
            spans.push(Span::raw(format!(
                "| {}{}{} ",
                escape(name),
                if interface.mode.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", escape(&interface.mode))
                },
                if others > 1 {
                    format!(" [{others} views, Tab]")
                } else {
                    String::new()
                }
            )));
            if let Some(last) = &interface.last {
                spans.push(Span::styled(
                    format!(
                        "| {} pkt/s {}bit/s ",
                        si(last["pps"].as_f64().unwrap_or(0.0)),
                        si(last["bps"].as_f64().unwrap_or(0.0))
                    ),
                    palette.fg(Color::Green).add_modifier(Modifier::BOLD),
                ));
            }
        }
        None => spans.push(Span::raw("| waiting for the first interval ")),
    }
    if let Some(status) = &model.status {
        let up = status["uptime_s"].as_f64().unwrap_or(0.0) as u64;
        spans.push(Span::raw(format!(
            "| pid {} up {}h{:02}m ",
            status["pid"].as_u64().unwrap_or(0),
            up / 3600,
            up / 60 % 60
        )));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_blind_spots(frame: &mut Frame<'_>, area: Rect, model: &Model, palette: Palette) {
    let last = model.interface().and_then(|(_, i)| i.last.as_ref());
    let cumulative = last.map(|l| &l["cumulative"]);
    let count = |field: &str| cumulative.and_then(|c| c[field].as_u64()).unwrap_or(0);
    let unattributed = last
        .and_then(|l| l["blind_spots"]["unattributed_packets"].as_u64())
        .unwrap_or(0);
    let mut spans = vec![Span::raw("blind spots: ")];
    for (label, value) in [
        ("non-IP", count("non_ip_packets")),
        ("malformed", count("malformed_packets")),
        ("no slot", count("overflow_packets")),
        ("truncated", count("truncated_packets")),
    ] {
        let style = if value > 0 {
            palette.alarm()
        } else {
            Style::default()
        };
        spans.push(Span::styled(format!("{label} {value}"), style));
        spans.push(Span::raw("  "));
    }
    // Frames in flight while the maps were read: counted, and attributed next interval. Not
    // a loss, so never red.
    spans.push(Span::raw(format!("in flight {unattributed}  ")));
    if let Some(last) = last {
        spans.push(Span::raw(format!(
            "| sources {} of {}",
            last["sources_tracked"].as_u64().unwrap_or(0),
            last["max_sources"].as_u64().unwrap_or(0)
        )));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, model: &Model, rows: &[Row], palette: Palette) {
    // The AS / CC column only when the daemon's [enrich] says something of a row, and only
    // where it leaves the addresses their room: the other columns take 104 with their gaps
    // and the borders, this one 13 more.
    let places = area.width >= 117 && rows.iter().any(|row| !row.place.is_empty());
    let header = TableRow::new(
        Column::ALL
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let title = format!("{}{}", i + 1, column.title_for(model.destinations));
                let style = if *column == model.sort {
                    Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
                } else {
                    Style::default().add_modifier(Modifier::BOLD)
                };
                Cell::from(title).style(style)
            })
            .chain(
                places
                    .then(|| {
                        Cell::from("AS / CC").style(Style::default().add_modifier(Modifier::BOLD))
                    })
                    .into_iter()
                    .chain([
                        Cell::from("TCP/UDP/ICMP/OTH %")
                            .style(Style::default().add_modifier(Modifier::BOLD)),
                        Cell::from("NEW").style(Style::default().add_modifier(Modifier::BOLD)),
                    ]),
            ),
    );
    let body = rows.iter().map(|row| {
        let mix = row.mix();
        let mut cells = vec![
            Cell::from(escape(&row.name).into_owned()),
            Cell::from(si(row.pps)),
            Cell::from(si(row.bps)),
            Cell::from(row.syn.to_string()),
            Cell::from(row.ports.to_string()),
            Cell::from(row.hosts.to_string()),
        ];
        if places {
            cells.push(Cell::from(escape(&row.place).into_owned()));
        }
        cells.push(Cell::from(format!(
            "{}/{}/{}/{}",
            mix[0], mix[1], mix[2], mix[3]
        )));
        cells.push(Cell::from(if row.new { "new" } else { "" }).style(palette.fg(Color::Yellow)));
        TableRow::new(cells)
    });
    let what = if model.destinations {
        let sampled = model
            .interface()
            .and_then(|(_, interface)| interface.last.as_ref())
            .and_then(|last| last["destinations_sampled"].as_u64());
        match sampled {
            Some(one_in) => format!("destinations (estimated from 1 frame in {one_in})"),
            None => String::from("destinations (hosts of [networks] local)"),
        }
    } else if model.prefixes {
        String::from("prefixes")
    } else {
        String::from("sources")
    };
    let title = match &model.filter {
        Some(filter) => format!(" top {what}, filter {} ", escape(filter)),
        None => format!(" top {what} "),
    };
    let mut widths = vec![
        Constraint::Length(39),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    if places {
        widths.push(Constraint::Length(12));
    }
    widths.extend([Constraint::Min(18), Constraint::Length(4)]);
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(palette.selected());
    let mut state = TableState::default();
    if !rows.is_empty() {
        state.select(Some(model.selected.min(rows.len() - 1)));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_alerts(frame: &mut Frame<'_>, area: Rect, model: &Model, palette: Palette) {
    let room = usize::from(area.height.saturating_sub(2));
    let lines: Vec<Line<'_>> = model
        .alerts
        .iter()
        .rev()
        .take(room)
        .map(|alert| {
            if alert["type"] == "rule" {
                // `RULE add drop: udp from port 123 to 192.0.2.5/32`: what mitigation did.
                let action = match alert["rate_pps"].as_u64() {
                    Some(pps) => format!("rate-limit {pps} pkt/s"),
                    None => text(&alert["action"]),
                };
                let mode = if alert["mode"] == "drop" {
                    String::new()
                } else {
                    format!(" ({})", text(&alert["mode"]))
                };
                return Line::from(vec![
                    Span::raw(format!("{} ", clock(alert))),
                    Span::styled("RULE ", palette.fg(Color::Magenta)),
                    Span::raw(format!(
                        "{} {action}{mode}: {}",
                        text(&alert["change"]),
                        text(&alert["signature"])
                    )),
                ]);
            }
            let style = match alert["severity"].as_str() {
                Some("critical") => palette.alarm(),
                Some("warning") => palette.fg(Color::Yellow),
                _ => Style::default(),
            };
            let attack = alert["attack"]["type"]
                .as_str()
                .or_else(|| alert["attack"]["kind"].as_str())
                .map(|kind| format!(" [{}]", escape(kind)))
                .unwrap_or_default();
            let top: Vec<String> = alert["contributors"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
                .map(|c| text(&c["subject"]))
                .collect();
            let top = if top.is_empty() {
                String::new()
            } else {
                format!(" top: {}", top.join(", "))
            };
            Line::from(vec![
                Span::raw(format!("{} ", clock(alert))),
                Span::styled(format!("{} ", text(&alert["severity"])), style),
                Span::raw(format!(
                    "{} {} {}{attack}{top}",
                    text(&alert["kind"]),
                    text(&alert["state"]),
                    text(&alert["subject"])
                )),
            ])
        })
        .collect();
    let title = match model.rules.len() {
        0 => String::from(" alerts "),
        rules => format!(" alerts | {rules} rules in force "),
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn describe_event(event: &Value) -> String {
    match event["event"].as_str() {
        Some("credential") => format!(
            "{} {} user {} secret {}",
            text(&event["protocol"]),
            text(&event["mechanism"]),
            text(&event["user"]),
            text(&event["secret"])
        ),
        Some("http") => format!(
            "{} {}{}",
            text(&event["method"]),
            text(&event["host"]),
            text(&event["path"])
        ),
        Some("dns") => format!("{} {}", text(&event["qtype"]), text(&event["name"])),
        Some("keyword") => format!("keyword {}", text(&event["keyword"])),
        _ => String::new(),
    }
}

fn draw_events(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let room = usize::from(area.height.saturating_sub(2));
    let lines: Vec<Line<'_>> = model
        .events
        .iter()
        .rev()
        .take(room)
        .map(|event| {
            Line::from(format!(
                "{} {} {} {}",
                clock(event),
                text(&event["event"]),
                text(&event["client"]),
                describe_event(event)
            ))
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" events ")),
        area,
    );
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, model: &Model, palette: Palette) {
    let line = match &model.input {
        Some(input) => Line::from(vec![
            Span::styled(
                "filter (address, part of one, or CIDR): ",
                palette.selected(),
            ),
            Span::raw(escape(&input.0).into_owned()),
            Span::raw("_  Enter apply  Esc cancel"),
        ]),
        None => Line::from(
            "q quit  s/1-6 sort  / filter  p pause  x prefixes  d destinations  Tab iface  Enter details  \u{2191}\u{2193} select",
        ),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_details(frame: &mut Frame<'_>, area: Rect, model: &Model, row: &Row, palette: Palette) {
    let width = area.width.saturating_sub(8).min(90);
    let height = area.height.saturating_sub(6).min(16);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(format!(" {} (Esc or Enter to close) ", escape(&row.name)));
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let [rates, spark, rest] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(3),
        Constraint::Min(1),
    ])
    .areas(inner);
    let mix = row.mix();
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "{} pkt/s  {}bit/s  SYN {}  ports {}  hosts {}{}",
                si(row.pps),
                si(row.bps),
                row.syn,
                row.ports,
                row.hosts,
                if row.new { "  new source" } else { "" }
            )),
            Line::from(format!(
                "TCP {}%  UDP {}%  ICMP {}%  other {}%  (pkt/s over the last intervals below)",
                mix[0], mix[1], mix[2], mix[3]
            )),
            Line::from(if row.place.is_empty() {
                String::new()
            } else {
                format!("{} {}", escape(&row.place), escape(&row.as_org))
            }),
        ]),
        rates,
    );
    let history: Vec<u64> = model
        .source_pps
        .get(&row.name)
        .map(|h| h.iter().map(|pps| pps.round() as u64).collect())
        .unwrap_or_default();
    let start = history.len().saturating_sub(usize::from(spark.width));
    frame.render_widget(
        Sparkline::default()
            .data(&history[start..])
            .style(palette.fg(Color::Cyan)),
        spark,
    );
    let mut lines: Vec<Line<'_>> = model
        .alerts_about(&row.name)
        .into_iter()
        .take(4)
        .map(|a| {
            Line::from(format!(
                "{} alert {} {} {}",
                clock(a),
                text(&a["kind"]),
                text(&a["state"]),
                text(&a["subject"])
            ))
        })
        .collect();
    lines.extend(model.events_about(&row.name).into_iter().take(4).map(|e| {
        Line::from(format!(
            "{} {} {}",
            clock(e),
            text(&e["event"]),
            describe_event(e)
        ))
    }));
    if lines.is_empty() {
        lines.push(Line::from("no alert or event about it yet"));
    }
    frame.render_widget(Paragraph::new(lines), rest);
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::top::Model;

    /// The screen of `model` in a plain terminal `width` columns wide, 30 rows high.
    fn screen(model: &Model, width: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, 30)).unwrap();
        terminal
            .draw(|frame| draw(frame, model, Palette { plain: true }))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        buffer
            .content()
            .iter()
            .map(|cell| cell.symbol())
            .collect::<String>()
    }

    /// With `NO_COLOR`, the whole screen, alarms included, has no colour.
    #[test]
    fn no_color_means_no_colour() {
        let mut model = Model::default();
        model.apply(serde_json::json!({
            "type": "interval", "iface": "eth0", "pps": 10.0,
            "cumulative": {"malformed_packets": 3},
            "top": [{"source": "192.0.2.1", "pps": 10.0}],
        }));
        model.apply(serde_json::json!({
            "type": "alert", "severity": "critical", "kind": "spike_pps", "state": "start",
            "subject": "global", "time": "2026-12-03T08:00:00.000Z",
        }));
        for plain in [false, true] {
            let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
            terminal
                .draw(|frame| draw(frame, &model, Palette { plain }))
                .unwrap();
            let buffer = terminal.backend().buffer().clone();
            let coloured = buffer
                .content()
                .iter()
                .any(|cell| cell.fg != Color::Reset || cell.bg != Color::Reset);
            assert_eq!(coloured, !plain);
            let screen: String = buffer.content().iter().map(|cell| cell.symbol()).collect();
            assert!(screen.contains("malformed 3"));
            assert!(screen.contains("spike_pps"));
        }
    }

    /// A signature rule's add is a line among the alerts, and the pane says how many rules
    /// are in force; its removal takes it out of the count, its line stays.
    #[test]
    fn rules_in_force_are_counted_and_their_changes_listed() {
        let mut model = Model::default();
        let rule = |change: &str, index: u64, signature: &str| {
            serde_json::json!({
                "type": "rule", "change": change, "index": index, "mode": "drop",
                "action": "drop", "rate_pps": null, "signature": signature,
                "time": "2026-12-03T08:00:01.000Z",
            })
        };
        model.apply(rule("add", 0, "udp from port 123 to 192.0.2.5/32"));
        model.apply(rule("add", 1, "tcp syn to 192.0.2.6/32 port 443"));
        model.apply(rule("extend", 1, "tcp syn to 192.0.2.6/32 port 443"));
        let screen = |model: &Model| screen(model, 120);
        let shown = screen(&model);
        assert!(shown.contains("alerts | 2 rules in force"), "{shown}");
        assert!(
            shown.contains("RULE add drop: udp from port 123 to 192.0.2.5/32"),
            "{shown}"
        );
        model.apply(rule("remove", 0, "udp from port 123 to 192.0.2.5/32"));
        let shown = screen(&model);
        assert!(shown.contains("alerts | 1 rules in force"), "{shown}");
        assert!(
            shown.contains("RULE remove drop: udp from port 123 to 192.0.2.5/32"),
            "{shown}"
        );
    }

    /// A wide terminal shows a source's AS and country in a column of their own; a narrow
    /// one leaves the column out, so that addresses keep their room; with no AS known there
    /// is no column.
    #[test]
    fn the_as_column_shows_where_it_fits_and_says_something() {
        let mut model = Model::default();
        model.apply(serde_json::json!({
            "type": "interval", "iface": "eth0", "pps": 10.0,
            "top": [{"source": "198.51.100.200", "pps": 10.0,
                     "asn": 64500, "as_org": "EXAMPLE-NET", "country": "NL"}],
        }));
        let wide = screen(&model, 140);
        assert!(
            wide.contains("AS / CC") && wide.contains("AS64500 NL"),
            "{wide}"
        );
        let narrow = screen(&model, 80);
        assert!(!narrow.contains("AS / CC"), "{narrow}");
        // Just too narrow for it: the address keeps its whole column.
        let almost = screen(&model, 116);
        assert!(!almost.contains("AS / CC"), "{almost}");
        assert!(screen(&model, 117).contains("AS64500 NL"));
        assert!(narrow.contains("198.51.100.200"), "{narrow}");
        let mut unknown = Model::default();
        unknown.apply(serde_json::json!({
            "type": "interval", "iface": "eth0", "pps": 10.0,
            "top": [{"source": "192.0.2.1", "pps": 10.0}],
        }));
        assert!(!screen(&unknown, 140).contains("AS / CC"));
    }
}
