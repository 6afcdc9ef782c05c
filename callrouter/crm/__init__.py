"""What the CRM sends in: clients and managers as a CRM writes them (phones in any
form), validated and normalized once, here, for the REST API and the CSV import alike."""
