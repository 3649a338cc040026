//! The graph as Mermaid flowchart source.

use std::collections::BTreeMap;

use schemas::{
    graph::{Graph, NodeKind},
    NodeName,
};

/// Mermaid flowchart source of `graph`. Node ids are `n0`, `n1`, ... and labels are
/// validated names, so nothing from the bus can alter the diagram's syntax. Nodes named
/// as downstream but not serving are drawn dashed.
pub fn render(graph: &Graph) -> String {
    let id_of: BTreeMap<&NodeName, &str> = graph
        .nodes
        .iter()
        .map(|n| (&n.name, n.mermaid_id.as_str()))
        .collect();
    let mut out = String::from("flowchart LR\n");
    for node in &graph.nodes {
        // A plain Services API service is a hexagon; a mesh node a box.
        let (open, close) = match node.kind {
            NodeKind::Node => ("[", "]"),
            NodeKind::Service => ("{{", "}}"),
        };
        out.push_str(&format!(
            "    {}{open}\"{}\"{close}\n",
            node.mermaid_id, node.name
        ));
    }
    for edge in &graph.edges {
        if let (Some(from), Some(to)) = (id_of.get(&edge.from), id_of.get(&edge.to)) {
            out.push_str(&format!("    {from} --> {to}\n"));
        }
    }
    let offline: Vec<_> = graph
        .nodes
        .iter()
        .filter(|n| n.instances.is_empty())
        .map(|n| n.mermaid_id.as_str())
        .collect();
    if !offline.is_empty() {
        out.push_str("    classDef offline stroke-dasharray: 4 4,opacity:0.6\n");
        out.push_str(&format!("    class {} offline\n", offline.join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use schemas::graph::{Edge, GraphNode};

    use super::*;

    fn node(index: usize, name: &str, serving: bool) -> GraphNode {
        GraphNode {
            name: NodeName::new(name).unwrap(),
            mermaid_id: format!("n{index}"),
            instances: if serving { vec!["i".into()] } else { vec![] },
            downstream: vec![],
            work_ms: 0,
            fail_rate: 0.0,
            function: String::new(),
            kind: Default::default(),
            endpoints: vec![],
            stats: None,
            state: None,
            color: None,
            last_at: None,
        }
    }

    #[test]
    fn renders_nodes_edges_and_offline_class() {
        let edge = |a: &str, b: &str| Edge {
            from: NodeName::new(a).unwrap(),
            to: NodeName::new(b).unwrap(),
        };
        let graph = Graph {
            entry: None,
            nodes: vec![
                node(0, "A", true),
                node(1, "B", false),
                node(2, "end", false),
            ],
            edges: vec![edge("A", "B"), edge("A", "end"), edge("A", "ghost")],
            truncated: None,
        };
        assert_eq!(
            render(&graph),
            "flowchart LR\n    n0[\"A\"]\n    n1[\"B\"]\n    n2[\"end\"]\n    n0 --> n1\n    n0 --> n2\n    classDef offline stroke-dasharray: 4 4,opacity:0.6\n    class n1,n2 offline\n"
        );
    }
}
