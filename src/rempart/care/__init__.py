"""Care: what professionals do every day: rights checks, prior agreements, invoices."""
