"""The agency side: carrier registry, round lifecycle, combination, operator API and reports."""
