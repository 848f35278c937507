"""`rempart seed`: deterministic, realistic, and resumable when cut short."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from rempart.platform import Platform
from rempart.registry import seed as seed_module
from rempart.registry import synthetic
from rempart.registry.models import Beneficiary, CanaryBeneficiary, Insurer, Professional

pytestmark = pytest.mark.integration
TODAY = dt.date(2026, 11, 23)


def test_seed_cut_short_resumes_and_then_leaves_the_registry_alone(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = seed_module.import_beneficiaries
    calls = {"n": 0}

    def flaky(**kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the operator hit Ctrl-C during the second insurer
        return real_import(**kwargs)

    monkeypatch.setattr(seed_module, "import_beneficiaries", flaky)
    with pytest.raises(KeyboardInterrupt):
        seed_module.seed(platform, seed_value=5, families=80, professionals=20, today=TODAY)
    monkeypatch.setattr(seed_module, "import_beneficiaries", real_import)

    resumed = seed_module.seed(platform, seed_value=5, families=80, professionals=20, today=TODAY, canary_share=0.05)
    assert not resumed.already_seeded and resumed.professionals == 20
    expected = synthetic.generate_insurers(5, 80)
    with platform.session() as session:
        assert sorted(session.scalars(select(Insurer.amc_number))) == sorted(i.amc_number for i in expected)
        per_insurer = dict(
            session.execute(select(Beneficiary.insurer_id, func.count()).group_by(Beneficiary.insurer_id)).all()
        )
        assert len(per_insurer) == len(expected) and min(per_insurer.values()) > 0
        assert session.scalar(select(func.count()).select_from(Professional)) == 20
    # Canaries are flagged only in the guard schema, one per canary row the generator made.
    # (The first insurer was imported before the interruption, with the default share.)
    canaries = sum(
        is_canary
        for insurer in expected[1:]
        for _, is_canary in synthetic.generate_feed_rows(5, insurer, today=TODAY, canary_share=0.05)
    ) + sum(is_canary for _, is_canary in synthetic.generate_feed_rows(5, expected[0], today=TODAY))
    with platform.session() as session:
        assert canaries > 0
        assert session.scalar(select(func.count()).select_from(CanaryBeneficiary)) == canaries
    assert not list((platform.settings.data_dir / "tmp").glob("*.csv"))  # no clear feed left behind
    assert seed_module.seed(platform, seed_value=5, families=80, professionals=20, today=TODAY).already_seeded
