//! A reader for iasl's disassembly of a DMAR (`iasl -d`, acpica-tools 20200925): just the
//! fields the tests compare, per remapping structure and device scope, in table order.

/// One device scope as iasl prints it.
#[derive(Debug, Default)]
pub struct DslScope {
    pub offset: usize,
    pub scope_type: u8,
    pub length: u8,
    pub enumeration_id: u8,
    pub bus: u8,
    pub path: Vec<(u8, u8)>,
}

/// One remapping structure as iasl prints it; fields iasl did not print stay `None`.
#[derive(Debug, Default)]
pub struct DslStructure {
    pub offset: usize,
    pub structure_type: u16,
    /// False for "Unknown Subtable Type": iasl stops decoding the table there.
    pub decoded: bool,
    pub flags: Option<u8>,
    pub segment: Option<u16>,
    pub register_base: Option<u64>,
    pub base: Option<u64>,
    pub limit: Option<u64>,
    pub proximity_domain: Option<u32>,
    pub device_number: Option<u8>,
    pub device_name: Option<String>,
    pub scopes: Vec<DslScope>,
}

#[derive(Debug, Default)]
pub struct DslTable {
    pub haw_field: u8,
    pub flags: u8,
    pub structures: Vec<DslStructure>,
}

pub fn hex<T: TryFrom<u64>>(value: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(u64::from_str_radix(value, 16).unwrap()).unwrap()
}

/// Reads iasl's `[Offset DecOffset Len]  Field : Value` lines into structures and scopes.
pub fn read_dsl(text: &str) -> DslTable {
    let mut table = DslTable::default();
    for line in text.lines() {
        if line.starts_with("Raw Table Data") {
            break;
        }
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let (position, field_and_value) = rest.split_once(']').unwrap();
        let offset = usize::from_str_radix(
            position
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('h'),
            16,
        )
        .unwrap();
        let (field, value) = field_and_value.split_once(" : ").unwrap();
        let field = field.trim();
        let value = value.trim();
        let token = value.split_whitespace().next().unwrap_or("");
        match (field, table.structures.last_mut()) {
            ("Host Address Width", None) => table.haw_field = hex(token),
            ("Flags", None) => table.flags = hex(token),
            ("Subtable Type", _) => table.structures.push(DslStructure {
                offset,
                structure_type: hex(token),
                decoded: !value.contains("Unknown"),
                ..Default::default()
            }),
            ("Device Scope Type", Some(s)) => s.scopes.push(DslScope {
                offset,
                scope_type: hex(token),
                ..Default::default()
            }),
            (_, Some(s)) => match (field, s.scopes.last_mut()) {
                ("Entry Length", Some(sc)) => sc.length = hex(token),
                ("Enumeration ID", Some(sc)) => sc.enumeration_id = hex(token),
                ("PCI Bus Number", Some(sc)) => sc.bus = hex(token),
                ("PCI Path", Some(sc)) => {
                    let (d, f) = token.split_once(',').unwrap();
                    sc.path.push((hex(d), hex(f)));
                }
                ("Flags", None) => s.flags = Some(hex(token)),
                ("PCI Segment Number", None) => s.segment = Some(hex(token)),
                ("Register Base Address", None) => s.register_base = Some(hex(token)),
                ("Base Address", None) => s.base = Some(hex(token)),
                ("End Address (limit)", None) => s.limit = Some(hex(token)),
                ("Proximity Domain", None) => s.proximity_domain = Some(hex(token)),
                ("Device Number", None) => s.device_number = Some(hex(token)),
                ("Device Name", None) => s.device_name = Some(value.trim_matches('"').to_string()),
                _ => {}
            },
            _ => {}
        }
    }
    table
}
