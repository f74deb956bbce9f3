// Parses LogQL queries with Grafana's own LogQL grammar (@grafana/lezer-logql, the parser
// behind Grafana's Loki query editor) and prints, per query, one JSON line: the offsets of
// syntax errors and the names of the syntax nodes, for tests/static/test_log_shipping.py.
// Lezer recovers from errors instead of throwing, so an error is an error node in the tree.
"use strict";
const { parser } = require("@grafana/lezer-logql");

for (const query of process.argv.slice(2)) {
  const errors = [];
  const nodes = [];
  parser.parse(query).iterate({
    enter(node) {
      if (node.type.isError) errors.push(node.from);
      nodes.push(node.name);
    },
  });
  console.log(JSON.stringify({ query, errors, nodes }));
}
