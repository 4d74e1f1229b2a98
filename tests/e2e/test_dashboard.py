"""A person's path through the dashboard, in a real headless Chromium against a real stack.

Open the dashboard, upload a dataset, see its preview and the estimates, launch the
demo run from the form, watch the loss chart grow live, see the run succeed,
download the adapter, clone it into a second run and compare the two. Then the quick
start on real weights: fine-tune the built-in SmolLM2 from the dashboard and hold a
conversation with it and its base model in the playground.
Screenshots of every screen go to test-artifacts/screenshots/; the run page's is
also copied to docs/screenshot-run.png for the README.
"""

from __future__ import annotations

import contextlib
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.paths import PROJECT_ROOT
from tests.stack import ADMIN_KEY

SHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_TRAIN = PROJECT_ROOT / "data" / "demo" / "antonyms-train.jsonl"
RUN_TIMEOUT_MS = 180_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: make browser"),
]


def shoot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for_status(page, status: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"#run-header .badge-{status}").wait_for(timeout=RUN_TIMEOUT_MS)


def log_in(page, base: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(base + "/")
    expect(page.locator("h1")).to_have_text("Log in")
    page.fill("#login-key", ADMIN_KEY)
    page.click("#login-button")
    expect(page.locator("h1")).to_have_text("Runs")


def fill_overrides(page, **values: str) -> None:  # type: ignore[no-untyped-def]
    for name, value in values.items():
        page.fill(f"#f-{name}", value)


@contextlib.contextmanager
def browser_page(failure_shot: str, *, console_errors: bool = True, **context_options):  # type: ignore[no-untyped-def]
    """A page in a real headless Chromium. What the browser complains about fails the test; on a
    failure the page is kept as a screenshot, and the complaints so far go into the error."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_options)
        page = context.new_page()
        if console_errors:
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console: {message.text}") if message.type == "error" else None
                ),
            )
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        try:
            yield page
        except Exception as error:
            shoot(page, failure_shot)
            raise AssertionError(f"{error}\nbrowser problems so far: {problems}") from error
        finally:
            context.close()
            browser.close()
    assert problems == [], problems


def test_a_person_trains_chats_and_compares(stack_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    stack = stack_factory("sqlite")
    base = stack.base_url
    with browser_page("99-failure", accept_downloads=True) as page:
        # 0. Nothing shows without a key: every page leads to the login form.
        log_in(page, base)

        # 1. The dashboard, empty.
        expect(page.locator("h1")).to_have_text("Runs")
        expect(page.locator("#runs-table")).to_contain_text("No runs yet")
        shoot(page, "01-runs-empty")

        # 2. Upload a dataset: progress, detected format, rendered samples, token lengths.
        page.click("nav >> text=Datasets")
        upload = tmp_path / "antonyms.jsonl"
        shutil.copyfile(DEMO_TRAIN, upload)
        page.set_input_files("#upload-file", str(upload))
        page.click("#upload-button")
        expect(page.locator(".alert.success")).to_contain_text("antonyms.jsonl", timeout=60_000)
        expect(page.get_by_test_id("dataset-format")).to_have_text("messages")
        expect(page.locator(".sample mark.completion").first).to_be_visible()
        expect(page.locator(".sample .prompt").first).to_contain_text("[INST]")
        assert page.locator(".histogram .hbar").count() > 1
        assert "/datasets/file-" in page.url  # the upload answer pushed the dataset's own URL
        shoot(page, "02-dataset-preview")

        # 3. The form, with the demo preset and this dataset; live estimates.
        page.click(".alert.success >> text=Train on it")
        page.wait_for_url("**/runs/new?preset=demo&dataset=file-*")
        expect(page.get_by_test_id("trainable-params")).to_have_text("278,528", timeout=30_000)
        max_steps, logging_steps = 30, 2
        fill_overrides(page, suffix="e2e-demo", max_steps=str(max_steps), logging_steps=str(logging_steps))
        expect(page.get_by_test_id("total-steps")).to_have_text(str(max_steps), timeout=15_000)
        expect(page.locator(".estimates [data-static-chart] canvas")).to_have_count(1)
        # 24, 40 and 80 GB cards, and the online training worker of this stack (a CPU one).
        expect(page.locator(".verdict")).to_have_count(4)
        expect(page.locator(".verdict-cpu")).to_contain_text("training@")
        page.screenshot(path=str(SHOTS / "03-new-run.png"))  # the viewport: form and sticky estimates

        # 4. Launch; the run page connects to the stream and the loss chart fills in live.
        page.click("#launch")
        page.wait_for_url("**/runs/ftjob-*")
        first_run = page.url.rsplit("/", 1)[1]
        initial_points = int(page.locator("#chart-loss").get_attribute("data-points") or 0)
        page.wait_for_function(
            "n => Number(document.querySelector('#chart-loss').dataset.points) > n",
            arg=initial_points,
            timeout=RUN_TIMEOUT_MS,
        )
        page.wait_for_function(
            "n => Number(document.querySelector('#chart-loss').dataset.points) >= n",
            arg=max(initial_points + 3, 5),
            timeout=RUN_TIMEOUT_MS,
        )
        wait_for_status(page, "succeeded")
        logged_steps = max_steps // logging_steps  # the chart has a point for each
        assert int(page.locator("#chart-loss").get_attribute("data-points") or 0) == logged_steps
        expect(page.locator("#chart-loss canvas")).to_have_count(1)
        expect(page.locator("#run-events")).to_contain_text("successfully completed")
        # Where the time before the first step went, in the header the live stream swapped in.
        expect(page.get_by_test_id("first-step")).to_contain_text("first step after")
        expect(page.get_by_test_id("first-step")).to_contain_text("loading the model")
        expect(page.get_by_test_id("run-phase")).to_have_count(0)  # finished: no phase is "now"
        expect(page.locator("#run-events")).to_contain_text("loading the base model in 4 bit")
        run_shot = shoot(page, "04-run-succeeded")
        (PROJECT_ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(run_shot, PROJECT_ROOT / "docs" / "screenshot-run.png")
        page.reload()  # a reload shows the whole history from the database
        assert int(page.locator("#chart-loss").get_attribute("data-points") or 0) == logged_steps

        # 5. A second run, cloned with a lower learning rate: it trains while we download and chat.
        page.click("#run-header >> text=Clone")
        expect(page.locator("#f-max_steps")).to_have_value(str(max_steps))
        fill_overrides(page, suffix="e2e-demo-low-lr", learning_rate="0.0005", max_steps="10")
        page.click("#launch")
        page.wait_for_url("**/runs/ftjob-*")
        second_run = page.url.rsplit("/", 1)[1]

        # 6. Download the first run's adapter.
        page.goto(f"{base}/runs/{first_run}")
        with page.expect_download() as download_info:
            page.click("text=Download adapter")
        archive = tmp_path / "adapter.zip"
        download_info.value.save_as(archive)
        with zipfile.ZipFile(archive) as zf:
            assert any(name.endswith("adapter_config.json") for name in zf.namelist())

        # 8. Compare the two runs, by step and by tokens seen.
        page.goto(f"{base}/runs/{second_run}")
        wait_for_status(page, "succeeded")
        page.click("nav >> text=Compare")
        page.check(f"input[value='{first_run}']")
        page.check(f"input[value='{second_run}']")
        page.click("#compare-button")
        expect(page.locator("[data-compare-chart='loss'] canvas")).to_have_count(1)
        diff = page.locator("#config-diff")
        expect(diff).to_contain_text("learning_rate")
        expect(diff).to_contain_text("max_steps")
        shoot(page, "06-compare")
        page.check("input[name='x'][value='tokens']")
        page.click("#compare-button")
        expect(page.locator("figcaption").first).to_contain_text("tokens seen")

        # 9. The list, on a desktop and on a phone.
        page.goto(base + "/")
        expect(page.locator("#runs-table .badge-succeeded")).to_have_count(2)
        shoot(page, "07-runs")
        page.set_viewport_size({"width": 390, "height": 844})
        shoot(page, "08-runs-phone")
        page.goto(f"{base}/runs/{first_run}")
        shoot(page, "09-run-phone")


@pytest.mark.timeout(900)  # a real model trains on the CPU: minutes, more on a loaded machine
def test_quick_start_on_a_real_model_then_a_conversation(stack_factory, smollm2) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    stack = stack_factory("sqlite")
    with browser_page("99-failure-quick-start", console_errors=False) as page:
        log_in(page, stack.base_url)
        page.click("#quick-start-real")
        page.wait_for_url("**/runs/new?preset=smollm2")
        expect(page.locator("#f-model_name")).to_have_value("HuggingFaceTB/SmolLM2-135M-Instruct")
        fill_overrides(page, suffix="smollm2-antonyms", max_steps="12")
        page.click("#launch")
        page.wait_for_url("**/runs/ftjob-*")
        page.locator("#run-header .badge-succeeded").wait_for(timeout=600_000)

        # A conversation: each side keeps its own earlier answers.
        page.click("#run-header >> text=Chat with it")
        page.fill("#c-prompt", "What is the opposite of hot?")
        page.click("#send-button")
        first = page.locator(".exchange").nth(0)
        # Both answers stream in; each is marked done when its stream ends.
        expect(first.locator(".content[data-done]")).to_have_count(2, timeout=120_000)
        adapter_says = first.get_by_test_id("answer-adapter").locator(".content").inner_text().strip()
        base_says = first.get_by_test_id("answer-base").locator(".content").inner_text().strip()
        assert adapter_says.lower().rstrip(".") == "cold", adapter_says  # the bare word, as it was taught
        assert base_says.startswith("The opposite of hot is"), base_says  # the base answers in sentences

        page.fill("#c-prompt", "And the opposite of early?")
        page.click("#send-button")
        expect(page.locator(".exchange")).to_have_count(2, timeout=120_000)
        second = page.locator(".exchange").nth(1)
        expect(second.locator("p.you")).to_contain_text("And the opposite of early?")
        expect(second.locator(".content[data-done]")).to_have_count(2, timeout=120_000)
        followup = second.get_by_test_id("answer-adapter").locator(".content").inner_text().strip()
        assert followup.lower().rstrip(".") == "late", followup
        shoot(page, "05-playground")
