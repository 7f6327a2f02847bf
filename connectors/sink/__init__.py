"""A recording HTTP sink standing in for outbound integrations (Slack, Intercom, a CRM) in tests and demos."""
