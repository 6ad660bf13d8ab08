"""What the thread sets up by hand, after Django created the tables (no Django import here)."""

# The thread's trigger, verbatim but for the number's width.
TRIGGER = """
CREATE SEQUENCE IF NOT EXISTS invoice_number_seq;
CREATE OR REPLACE FUNCTION generate_invoice_number()
RETURNS TRIGGER AS $$
BEGIN
    NEW.invoice_number := 'INV-' || LPAD(nextval('invoice_number_seq')::TEXT, 7, '0');
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS set_invoice_number ON invoices;
CREATE TRIGGER set_invoice_number
BEFORE INSERT ON invoices
FOR EACH ROW
EXECUTE FUNCTION generate_invoice_number();
INSERT INTO peers_controlsequence (name, sequence_number, prefix) VALUES ('invoice', 0, 'INV-')
ON CONFLICT (name) DO NOTHING;
"""
