"""The allocator's pure core: each algorithm, over-provisioning, capability, tags,
host states, the avoid set and the reasons a 533 answer gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgmt.orchestration.allocator import (
    Choice,
    Factors,
    HostView,
    Request,
    choose,
    insufficient,
    parse_tags,
)

SMALL = Request(cpu_number=1, cpu_speed=1000, memory_mib=512)


def host(i: int, *, cores=4, mhz=2000, mib=8192, cpu_used=0, memory_used=0, **kw) -> HostView:
    return HostView(
        id=i,
        name=f"h{i}",
        cpu_number=cores,
        cpu_speed=mhz,
        memory_mib=mib,
        cpu_used=cpu_used,
        memory_used=memory_used,
        **kw,
    )


def picked(choice: Choice) -> str | None:
    return choice.host.name if choice.host else None


# -- algorithms ----------------------------------------------------------------------------

HOSTS = [
    host(1, cpu_used=8000, memory_used=8192),  # full
    host(2, cpu_used=2000),  # 25 % CPU
    host(3, cpu_used=6000, memory_used=1024),  # 75 % CPU
    host(4),  # empty
]


def test_firstfit_takes_the_first_host_with_room_in_host_order():
    choice = choose(HOSTS, SMALL, "firstfit")
    assert picked(choice) == "h2"
    assert list(choice.refused) == ["h1"]  # it stopped looking at the first fit
    assert choice.refused["h1"] == "0 of 8000 MHz free"


def test_fillfirst_packs_onto_the_fullest_host_that_still_has_room():
    assert picked(choose(HOSTS, SMALL, "fillfirst")) == "h3"


def test_disperse_spreads_onto_the_emptiest_host():
    assert picked(choose(HOSTS, SMALL, "disperse")) == "h4"


def test_ties_go_to_the_earlier_host():
    same = [host(5), host(6), host(7)]
    for algorithm in ("firstfit", "fillfirst", "disperse"):
        assert picked(choose(same, SMALL, algorithm)) == "h5"


def test_fullness_is_the_scarcer_of_cpu_and_memory():
    # h8 is light on CPU but its memory is 90 % used: fuller than h9 at 50 % CPU.
    hosts = [host(8, memory_used=7373), host(9, cpu_used=4000)]
    assert picked(choose(hosts, SMALL, "fillfirst")) == "h8"
    assert picked(choose(hosts, SMALL, "disperse")) == "h9"


def test_an_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="random"):
        choose(HOSTS, SMALL, "random")


# -- capacity and capability ---------------------------------------------------------------


def test_cpu_over_provisioning_multiplies_the_hosts_mhz():
    busy = [host(1, cores=2, mhz=1000, cpu_used=1500)]  # 500 of 2000 MHz free
    assert picked(choose(busy, SMALL)) is None
    assert choose(busy, SMALL).refused == {"h1": "500 of 2000 MHz free"}
    assert picked(choose(busy, SMALL, factors=Factors(cpu=2.0))) == "h1"  # 2500 of 4000


def test_memory_over_provisioning_multiplies_the_hosts_memory():
    busy = [host(1, mib=1024, memory_used=768)]
    assert choose(busy, SMALL).refused == {"h1": "256 of 1024 MiB free"}
    assert picked(choose(busy, SMALL, factors=Factors(memory=1.5))) == "h1"  # 768 of 1536
    # The CPU factor does nothing for memory.
    assert picked(choose(busy, SMALL, factors=Factors(cpu=4.0))) is None


def test_an_exact_fit_fits():
    exact = [host(1, cores=1, mhz=1000, mib=512)]
    assert picked(choose(exact, SMALL)) == "h1"


def test_cores_and_core_speed_are_capabilities_over_provisioning_does_not_change():
    lots = Factors(cpu=10.0, memory=10.0)
    four_cores = Request(cpu_number=4, cpu_speed=1000, memory_mib=256)
    assert choose([host(1, cores=2)], four_cores, factors=lots).refused == {"h1": "has 2 core(s)"}
    fast = Request(cpu_number=1, cpu_speed=3000, memory_mib=256)
    assert choose([host(1, mhz=2600)], fast, factors=lots).refused == {
        "h1": "cores run at 2600 MHz"
    }


def test_a_host_of_unknown_capacity_takes_nothing():
    assert picked(choose([host(1, cores=0, mhz=0, mib=0)], SMALL, "disperse")) is None


# -- states, tags, hypervisor, avoid -------------------------------------------------------


def test_only_up_and_enabled_hosts_in_enabled_clusters_pods_and_zones_take_instances():
    hosts = [
        host(1, state="Down"),
        host(2, resource_state="Disabled"),
        host(3, resource_state="Maintenance"),
        host(4, resource_state="PrepareForMaintenance"),
        host(5, blocked="cluster c1 is Disabled"),
    ]
    for algorithm in ("firstfit", "fillfirst", "disperse"):
        choice = choose(hosts, SMALL, algorithm)
        assert choice.host is None
        assert choice.refused == {
            "h1": "state Down",
            "h2": "resource state Disabled",
            "h3": "resource state Maintenance",
            "h4": "resource state PrepareForMaintenance",
            "h5": "cluster c1 is Disabled",
        }
    assert picked(choose([*hosts, host(6)], SMALL, "fillfirst")) == "h6"


def test_every_requested_tag_must_be_on_the_host():
    hosts = [host(1, tags=frozenset({"ssd"})), host(2, tags=frozenset({"ssd", "gpu", "x"}))]
    wanted = Request(cpu_number=1, cpu_speed=500, memory_mib=256, tags=frozenset({"ssd", "gpu"}))
    choice = choose(hosts, wanted)
    assert picked(choice) == "h2" and choice.refused == {"h1": "lacks tag(s) gpu"}
    # A request without tags may use a tagged host.
    assert picked(choose(hosts, SMALL)) == "h1"


def test_host_tags_are_parsed_from_the_comma_separated_column():
    assert parse_tags(" ssd, gpu,,") == {"ssd", "gpu"}
    assert parse_tags(None) == frozenset()


def test_the_hypervisor_must_match_when_asked():
    hosts = [host(1, hypervisor="KVM"), host(2, hypervisor="Netns")]
    netns = Request(cpu_number=1, cpu_speed=500, memory_mib=256, hypervisor="Netns")
    choice = choose(hosts, netns)
    assert picked(choice) == "h2" and choice.refused == {"h1": "hypervisor KVM"}
    assert picked(choose(hosts, SMALL)) == "h1"


def test_avoided_hosts_are_skipped():
    avoid = Request(cpu_number=1, cpu_speed=500, memory_mib=256, avoid=frozenset({4}))
    choice = choose(HOSTS, avoid, "disperse")
    assert picked(choice) == "h2"
    assert choice.refused["h4"] == "excluded by the caller"


# -- the 533 answer ------------------------------------------------------------------------


def test_the_533_answer_says_what_was_asked_and_why_each_host_said_no():
    wanted = Request(cpu_number=2, cpu_speed=1000, memory_mib=1024, tags=frozenset({"ssd"}))
    hosts = [
        host(1, state="Down"),
        host(2, tags=frozenset({"ssd"}), mib=1024, memory_used=512),
        host(3),
    ]
    error = insufficient("z1", wanted, choose(hosts, wanted, "disperse"))
    assert error.code == 533 and error.cserrorcode == 4375
    assert error.text == (
        "Insufficient capacity: no host in zone z1 can take 2 CPU x 1000 MHz and 1024 MiB "
        "with tags ssd (h1: state Down; h2: 512 of 1024 MiB free; h3: lacks tag(s) ssd)"
    )


def test_the_533_answer_for_a_zone_without_hosts_and_for_many_hosts():
    assert "zone z1 has no hosts" in insufficient("z1", SMALL, choose([], SMALL)).text
    many = [host(i, state="Down") for i in range(25)]
    text = insufficient("z1", SMALL, choose(many, SMALL)).text
    assert "h9: state Down" in text and "h10" not in text
    assert text.endswith("and 15 more host(s))")


# -- properties ----------------------------------------------------------------------------

hosts_strategy = st.lists(
    st.builds(
        lambda i, cores, mhz, mib, cpu_used, memory_used, up: host(
            i,
            cores=cores,
            mhz=mhz,
            mib=mib,
            cpu_used=cpu_used,
            memory_used=memory_used,
            resource_state="Enabled" if up else "Disabled",
        ),
        st.integers(0, 10_000),
        st.integers(0, 8),
        st.integers(0, 4000),
        st.integers(0, 32_768),
        st.integers(0, 40_000),
        st.integers(0, 40_000),
        st.booleans(),
    ),
    max_size=12,
    unique_by=lambda h: h.id,
)


@given(
    hosts=hosts_strategy,
    request=st.builds(Request, st.integers(1, 8), st.integers(1, 4000), st.integers(1, 16_384)),
    algorithm=st.sampled_from(["firstfit", "fillfirst", "disperse"]),
    factor=st.sampled_from([1.0, 1.5, 4.0]),
)
def test_the_chosen_host_always_has_room_and_a_refusal_always_has_reasons(
    hosts, request, algorithm, factor
):
    factors = Factors(cpu=factor, memory=factor)
    choice = choose(hosts, request, algorithm, factors)
    if choice.host is None:
        assert set(choice.refused) == {h.name for h in hosts}
        return
    h = choice.host
    assert h.resource_state == "Enabled" and h.name not in choice.refused
    assert h.cpu_number >= request.cpu_number and h.cpu_speed >= request.cpu_speed
    assert h.cpu_used + request.cpu_mhz <= h.cpu_total * factor
    assert h.memory_used + request.memory_mib <= h.memory_mib * factor
    # The other algorithms agree that some host fits.
    for other in ("firstfit", "fillfirst", "disperse"):
        assert choose(hosts, request, other, factors).host is not None
