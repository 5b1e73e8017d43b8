"""Orchestration: from API calls to running routers and instances on hosts.

hosts/: the host drivers (what runs where); pki: the appliance CA; documents:
router documents computed from the database; sync: pushing them to the agents;
networks, routers, instances: life cycles; reconcile: the loop that repairs drift.
"""
