"""The lab: a CloudStack-style zone in a box built from network namespaces.

Modules: ``names`` (naming and addressing), ``netns`` (one `ip`/kill call each),
``topology`` (wiring of switch, internet, router, guests), ``daemons`` (detached
processes), ``pki`` (throwaway CA and certificates), ``baseline`` (the first router
document), ``agentclient`` (mutual-TLS API client), ``lab`` (the ``Lab`` life cycle),
``cli`` (``skiff lab``), ``testing`` (``running_lab`` for tests), and the helpers run
inside namespaces: ``nsinit``, ``httpd`` and ``scripts/udhcpc.sh``.
"""
