//! Reading the constant tensors out of an ONNX file: just enough of the protobuf wire
//! format to walk graph → node → attribute (including `If` subgraphs) → tensor. Models
//! we run natively (Silero VAD) take their weights from the same sha256-pinned file
//! ONNX Runtime would load, with no conversion step and no protobuf dependency.

use std::collections::HashMap;

/// One float tensor: its shape and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
}

/// Every float tensor held by a `Constant` node, in the main graph and in every
/// subgraph, by the node's output name. Malformed input is an error, never a panic.
pub fn constants(model: &[u8]) -> Result<HashMap<String, Tensor>, String> {
    let mut found = HashMap::new();
    for (field, value) in Fields::new(model) {
        if let (7, Value::Bytes(graph)) = (field?, value) {
            walk_graph(graph, &mut found)?;
        }
    }
    Ok(found)
}

fn walk_graph(graph: &[u8], found: &mut HashMap<String, Tensor>) -> Result<(), String> {
    for (field, value) in Fields::new(graph) {
        if let (1, Value::Bytes(node)) = (field?, value) {
            walk_node(node, found)?;
        }
    }
    Ok(())
}

fn walk_node(node: &[u8], found: &mut HashMap<String, Tensor>) -> Result<(), String> {
    let mut output = None;
    let mut op_type = "";
    let mut tensor = None;
    for (field, value) in Fields::new(node) {
        match (field?, value) {
            (2, Value::Bytes(name)) if output.is_none() => output = Some(text(name)?),
            (4, Value::Bytes(op)) => op_type = text(op)?,
            (5, Value::Bytes(attribute)) => {
                for (field, value) in Fields::new(attribute) {
                    match (field?, value) {
                        (5, Value::Bytes(t)) => tensor = Some(t),
                        (6, Value::Bytes(subgraph)) => walk_graph(subgraph, found)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(output), "Constant", Some(tensor)) = (output, op_type, tensor)
        && let Some(tensor) = float_tensor(tensor)?
    {
        found.insert(output.to_owned(), tensor);
    }
    Ok(())
}

/// A `TensorProto` of data type FLOAT (1), from `raw_data` or `float_data`; `None` for
/// other data types.
fn float_tensor(bytes: &[u8]) -> Result<Option<Tensor>, String> {
    const FLOAT: u64 = 1;
    let mut dims = Vec::new();
    let mut data_type = 0;
    let mut values = Vec::new();
    for (field, value) in Fields::new(bytes) {
        match (field?, value) {
            (1, Value::Varint(d)) => dims.push(d as usize),
            (1, Value::Bytes(packed)) => {
                let mut rest = packed;
                while !rest.is_empty() {
                    dims.push(varint(&mut rest)? as usize);
                }
            }
            (2, Value::Varint(t)) => data_type = t,
            (4, Value::Fixed32(v)) => values.push(f32::from_bits(v)),
            (4 | 9, Value::Bytes(raw)) => {
                if raw.len() % 4 != 0 {
                    return Err("float data not a multiple of 4 bytes".into());
                }
                values.extend(
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
            _ => {}
        }
    }
    if data_type != FLOAT {
        return Ok(None);
    }
    if dims.iter().product::<usize>() != values.len() {
        return Err(format!(
            "tensor of shape {dims:?} holds {} values",
            values.len()
        ));
    }
    Ok(Some(Tensor { dims, values }))
}

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "a name is not UTF-8".to_owned())
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message: `(field number, value)`; a malformed field ends
/// the iteration with an error.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Fields {
            rest: message,
            failed: false,
        }
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = varint(&mut self.rest)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.rest)?),
            1 => {
                take(&mut self.rest, 8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(varint(&mut self.rest)?).map_err(|e| e.to_string())?;
                Value::Bytes(take(&mut self.rest, len)?)
            }
            5 => {
                let b = take(&mut self.rest, 4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (Result<u64, String>, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match self.next_field() {
            Ok((field, value)) => Some((Ok(field), value)),
            Err(error) => {
                self.failed = true;
                Some((Err(error), Value::Fixed64))
            }
        }
    }
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if rest.len() < len {
        return Err("truncated protobuf field".into());
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

fn varint(rest: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first().ok_or("truncated protobuf varint")?;
        *rest = tail;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("protobuf varint too long".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    /// A model whose graph holds a Constant node and an `If` whose branch holds another.
    fn model() -> Vec<u8> {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut tensor = vec![0x08, 2, 0x10, 1]; // dims: 2, data_type: FLOAT
        tensor.extend(field(9, &raw));
        let constant = |name: &str| {
            let mut node = field(2, name.as_bytes());
            node.extend(field(4, b"Constant"));
            node.extend(field(5, &field(5, &tensor)));
            node
        };
        let branch = field(1, &constant("inner"));
        let mut if_node = field(4, b"If");
        if_node.extend(field(5, &field(6, &branch)));
        let mut graph = field(1, &constant("outer"));
        graph.extend(field(1, &if_node));
        field(7, &graph)
    }

    #[test]
    fn finds_constants_in_the_graph_and_its_subgraphs() {
        let found = constants(&model()).unwrap();
        let expected = Tensor {
            dims: vec![2],
            values: vec![1.5, -2.0],
        };
        assert_eq!(found.len(), 2);
        assert_eq!(found["outer"], expected);
        assert_eq!(found["inner"], expected);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let model = model();
        for len in 1..model.len() {
            let _ = constants(&model[..len]);
        }
        assert!(constants(&model[..model.len() - 3]).is_err());
    }
}
