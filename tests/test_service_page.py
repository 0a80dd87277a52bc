"""The service's page in a real browser (selenium driving Debian's chromium): pick a user, see history and
recommendations with explanations, add an item and see it recommended, like an item and see the list change."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn", reason="pip install -e '.[serve]' for the service")
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -e '.[dev]' for the browser test")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from recsys_llm.serve.app import create_app  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM or not DRIVER:
        pytest.skip("no browser: install Debian's chromium and chromium-driver (apt-get install -y chromium "
                    "chromium-driver; .ci/run does) to test the page")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    except WebDriverException as e:
        pytest.skip(f"chromium did not start ({str(e).splitlines()[0]})")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("page") / "run"
    shutil.copytree(tiny_run, run)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _ids(driver, list_id: str) -> list[str]:
    return [li.get_attribute("data-item-id") for li in driver.find_elements(By.CSS_SELECTOR, f"#{list_id} li")]


def _type(driver, element_id: str, text: str) -> None:
    el = driver.find_element(By.ID, element_id)
    el.clear()
    el.send_keys(text)


def test_page_shows_recommendations_adds_an_item_and_takes_a_like(browser, server):
    wait = WebDriverWait(browser, 20)
    browser.get(server + "/")
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert "u0" in [o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#users option")]
    _type(browser, "user", "u0")
    _type(browser, "k", "20")
    browser.find_element(By.ID, "load").click()
    wait.until(lambda d: len(_ids(d, "recs")) == 20)
    history, recs = _ids(browser, "history"), _ids(browser, "recs")
    assert history and not set(history) & set(recs)
    assert "because you liked" in browser.find_element(By.CSS_SELECTOR, "#recs li .why").text

    # a new item described like u0's (space) items is recommended to u0 right after it is added
    _type(browser, "new-id", "page-space")
    _type(browser, "new-title", "Item 96 space")
    _type(browser, "new-genres", "space rocket astronaut")
    _type(browser, "new-desc", "space rocket astronaut")
    browser.find_element(By.ID, "add").click()
    wait.until(lambda d: "added page-space" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: "page-space" in _ids(d, "recs"))

    # a like moves the item into the history and out of the list
    first = _ids(browser, "recs")[0]
    browser.find_element(By.CSS_SELECTOR, "#recs li button.like").click()
    wait.until(lambda d: "liked" in d.find_element(By.ID, "status").text)
    assert _ids(browser, "history")[0] == first and first not in _ids(browser, "recs")
    assert len(_ids(browser, "recs")) == 20

    # an unknown user gets the service's message, not a broken page
    _type(browser, "user", "nobody")
    browser.find_element(By.ID, "load").click()
    wait.until(lambda d: "not known" in d.find_element(By.ID, "status").text)
