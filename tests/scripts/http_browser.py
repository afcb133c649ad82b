#!/usr/bin/python3
"""The status page in a real browser (headless Chromium via Selenium and chromedriver), for
tests/integration/test_scp_http.cpp.

  http_browser.py URL TOKEN STUDY_ID SCREENSHOT_DIR

Logs in with the token form, checks the overview (health banner, the study's row with its state
and its analysis state, dead outbox rows), opens the study page (series and profile, the preview
image loaded with a non-zero natural width, the measurements table), keeps screenshots of both
pages in SCREENSHOT_DIR, then clicks "Retry every dead object" on the overview and waits for the
page to say how many were retried. Prints one JSON object of what it saw; exit 0 when the page
could be driven (the C++ test asserts on the values).
"""
import json
import os
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def main(url, token, study, shots):
    os.makedirs(shots, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="pacsnode-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400",
              f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    out = {}
    try:
        wait = WebDriverWait(driver, 30)
        driver.get(url + "/")
        # Not logged in: the page sends the browser to the token form.
        wait.until(EC.presence_of_element_located((By.ID, "token")))
        out["redirected_to_login"] = 1 if driver.current_url.endswith("/login") else 0
        driver.find_element(By.ID, "token").send_keys("wrong-token-wrong-token")
        driver.find_element(By.ID, "login").click()
        wait.until(EC.presence_of_element_located((By.ID, "login-failed")))
        out["wrong_token_refused"] = 1
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "login").click()
        wait.until(EC.presence_of_element_located((By.ID, "health")))
        out["health"] = driver.find_element(By.ID, "health").get_attribute("data-state")
        row = driver.find_element(By.CSS_SELECTOR, f'tr[data-study="{study}"]')
        out["study_row_state"] = row.find_element(By.CSS_SELECTOR, "td.state").text
        out["study_row_job"] = row.find_element(By.CSS_SELECTOR, "td.job").text
        out["dead_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#outbox tr[data-outbox] td.state-dead"))
        driver.save_screenshot(os.path.join(shots, "overview.png"))

        row.find_element(By.CSS_SELECTOR, "a").click()
        wait.until(EC.presence_of_element_located((By.ID, "study")))
        out["study_page_id"] = driver.find_element(By.ID, "study").get_attribute("data-study")
        out["series_profiles"] = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#series tr td:nth-child(4)")]
        imgs = driver.find_elements(By.CSS_SELECTOR, "img.preview")
        out["previews"] = len(imgs)
        # Wait until every preview has loaded (complete), then read its natural width.
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
        out["preview_widths"] = driver.execute_script(
            "return Array.from(document.querySelectorAll('img.preview')).map(i => i.naturalWidth)")
        out["segment_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#segments tr")) - 1
        out["delivery_rows"] = len(driver.find_elements(By.CSS_SELECTOR, "#delivery tr[data-outbox]"))
        driver.save_screenshot(os.path.join(shots, "study.png"))

        driver.get(url + "/")
        button = wait.until(EC.element_to_be_clickable((By.ID, "retry-dead")))
        button.click()
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script("const b = document.getElementById('retry-dead'); return !b || b.dataset.done"))
        done = driver.execute_script("const b = document.getElementById('retry-dead'); return b ? b.dataset.done : null")
        out["retried"] = int(done) if done and done.isdigit() else -1
    finally:
        driver.quit()
    print("RESULT " + json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.stderr.write(__doc__)
        sys.exit(2)
    main(*sys.argv[1:])
