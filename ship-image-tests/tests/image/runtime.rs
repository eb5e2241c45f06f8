//! The runtime environment (ship-api.md §12) of the default image `ship:latest` (flavour `full`,
//! [`full_image`]): every listed library imports, and a small real task per group works, as the
//! session user through the agent's API, without network. Plus the small `ship:slim`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use ship_image_tests::{Ship, ShipOptions, full_image, slim_image};

/// Seconds a shell command of these tests may take: the first matplotlib import of a session
/// user builds its font cache, and the machine may be busy.
const SLOW_COMMAND_SECS: u64 = 180;

/// Runs `cmd` in the session's shell with [`SLOW_COMMAND_SECS`]; returns stdout, fails unless
/// it exits 0.
async fn sh(ship: &Ship, sid: &str, cmd: &str) -> anyhow::Result<String> {
    let r = ship
        .post(
            "/shell/exec",
            sid,
            json!({"command": cmd, "timeout": SLOW_COMMAND_SECS}),
        )
        .await?;
    anyhow::ensure!(r.status == StatusCode::OK, "{}: {}", r.status, r.text());
    let v = r.json();
    anyhow::ensure!(v["success"] == true, "`{cmd}` failed: {v}");
    Ok(v["stdout"].as_str().unwrap_or_default().to_owned())
}

/// Runs a Python cell and returns its text output; fails unless it succeeds.
async fn py(ship: &Ship, sid: &str, code: &str) -> anyhow::Result<String> {
    let v = ship.py(sid, code).await?;
    anyhow::ensure!(v["success"] == true, "cell failed: {v}\n--- code:\n{code}");
    Ok(v["output"]["text"].as_str().unwrap_or_default().to_owned())
}

/// The modules of ship-api.md §12, by import name.
const MODULES: &[&str] = &[
    "IPython",
    "matplotlib_inline",
    "numpy",
    "pandas",
    "scipy",
    "matplotlib",
    "seaborn",
    "sklearn",
    "cv2",
    "PIL",
    "imageio",
    "openpyxl",
    "xlrd",
    "docx",
    "pptx",
    "pdfplumber",
    "pypdf",
    "reportlab",
    "bs4",
    "lxml",
    "httpx",
    "yaml",
    "rich",
    "tomli",
    "tomllib",
    "jinja2",
];

#[tokio::test]
async fn every_listed_module_imports_as_the_session_user() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(full_image())).await?;
    let sid = "rt-import";
    let code = format!(
        "import importlib, json, os, sys\n\
         versions = {{}}\n\
         for name in {MODULES:?}:\n    \
             mod = importlib.import_module(name)\n    \
             versions[name] = str(getattr(mod, '__version__', getattr(mod, 'Version', '')))\n\
         print(json.dumps({{'uid': os.getuid(), 'python': sys.version_info[:2], 'versions': versions}}))"
    );
    let out = py(&ship, sid, &code).await?;
    let v: Value =
        serde_json::from_str(out.trim()).map_err(|e| anyhow::anyhow!("not JSON ({e}): {out}"))?;
    assert_ne!(v["uid"], 0, "runs as the session user: {v}");
    assert!(v["uid"].as_u64().is_some_and(|u| u >= 10000), "{v}");
    let python = v["python"].as_array().cloned().unwrap_or_default();
    assert!(
        python.first() == Some(&json!(3)) && python.get(1).and_then(Value::as_u64) >= Some(11),
        "python 3.11 or newer: {v}"
    );
    for name in MODULES {
        assert!(v["versions"].get(name).is_some(), "{name} missing: {v}");
    }
    // xlrd 2 is what pandas needs for .xls; imageio has the v2/v3 API.
    assert!(
        v["versions"]["xlrd"]
            .as_str()
            .is_some_and(|s| s.starts_with('2')),
        "{v}"
    );
    py(&ship, sid, "import imageio.v2, imageio.v3").await?;
    eprintln!("versions: {}", v["versions"]);

    // Every installed distribution has its dependencies (Debian's and the PyPI wheels').
    let out = sh(&ship, sid, "python3 -m pip check").await?;
    assert!(out.contains("No broken requirements"), "{out}");
    Ok(())
}

#[tokio::test]
async fn data_stack_reads_excel_plots_and_fits() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(full_image())).await?;
    let sid = "rt-data";

    // A generated .xlsx, read back with pandas.
    let out = py(
        &ship,
        sid,
        "import openpyxl, pandas as pd\n\
         wb = openpyxl.Workbook(); ws = wb.active\n\
         ws.append(['city', 'temp'])\n\
         for row in [('Oslo', 4), ('Rome', 18), ('Cairo', 30), ('Lima', 18)]:\n    ws.append(row)\n\
         wb.save('weather.xlsx')\n\
         df = pd.read_excel('weather.xlsx')\n\
         print(df.shape, df['temp'].mean(), list(df['city']))",
    )
    .await?;
    assert_eq!(
        out.trim(),
        "(4, 2) 17.5 ['Oslo', 'Rome', 'Cairo', 'Lima']",
        "{out}"
    );

    // seaborn to a PNG file, read back by opencv, imageio and Pillow; the open figure is also
    // returned by the cell.
    let v = ship
        .py(
            sid,
            "import seaborn as sns, cv2, imageio.v3 as iio\n\
             from PIL import Image\n\
             ax = sns.barplot(data=df, x='city', y='temp')\n\
             ax.figure.savefig('temps.png')\n\
             with open('temps.png', 'rb') as f:\n    print(f.read(8) == b'\\x89PNG\\r\\n\\x1a\\n')\n\
             a, b, c = cv2.imread('temps.png'), iio.imread('temps.png'), Image.open('temps.png')\n\
             print(a.shape[:2] == b.shape[:2] == (c.height, c.width), a.shape[0] > 100)",
        )
        .await?;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["output"]["text"], "True\nTrue True", "{v}");
    assert_eq!(
        v["output"]["images"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );

    // scikit-learn and scipy.
    let out = py(
        &ship,
        sid,
        "import numpy as np\n\
         from sklearn.linear_model import LinearRegression\n\
         from scipy import optimize\n\
         X = np.arange(10).reshape(-1, 1); y = 3 * X.ravel() + 2\n\
         m = LinearRegression().fit(X, y)\n\
         print(round(float(m.coef_[0]), 3), round(float(m.intercept_), 3))\n\
         print(round(optimize.brentq(lambda x: x * x - 2, 0, 2), 6))",
    )
    .await?;
    assert_eq!(out.trim(), "3.0 2.0\n1.414214", "{out}");
    Ok(())
}

#[tokio::test]
async fn document_and_text_libraries_work() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(full_image())).await?;
    let sid = "rt-docs";

    // A PDF made with reportlab, its text extracted by pdfplumber and by pypdf.
    let out = py(
        &ship,
        sid,
        "from reportlab.lib.pagesizes import A4\n\
         from reportlab.pdfgen import canvas\n\
         c = canvas.Canvas('report.pdf', pagesize=A4)\n\
         c.drawString(72, 800, 'Bay runtime report 42'); c.showPage(); c.save()\n\
         import pdfplumber, pypdf\n\
         with pdfplumber.open('report.pdf') as pdf:\n    print(pdf.pages[0].extract_text().strip())\n\
         print(pypdf.PdfReader('report.pdf').pages[0].extract_text().strip())",
    )
    .await?;
    assert_eq!(
        out.trim(),
        "Bay runtime report 42\nBay runtime report 42",
        "{out}"
    );

    // Word and PowerPoint files written and read back.
    let out = py(
        &ship,
        sid,
        "import docx, pptx\n\
         d = docx.Document(); d.add_paragraph('hello docx'); d.save('a.docx')\n\
         print(docx.Document('a.docx').paragraphs[0].text)\n\
         p = pptx.Presentation(); s = p.slides.add_slide(p.slide_layouts[1])\n\
         s.shapes.title.text = 'hello pptx'; p.save('a.pptx')\n\
         print(pptx.Presentation('a.pptx').slides[0].shapes.title.text)",
    )
    .await?;
    assert_eq!(out.trim(), "hello docx\nhello pptx", "{out}");

    // Web and text: HTML, YAML, TOML, templates, an HTTP client (mock transport: no network),
    // rich.
    let out = py(
        &ship,
        sid,
        "import io, tomllib, tomli, yaml, jinja2, httpx\n\
         from bs4 import BeautifulSoup\n\
         from rich.console import Console\n\
         print(BeautifulSoup('<p>hi <b>bs4</b></p>', 'lxml').b.text)\n\
         print(yaml.safe_load('a: [1, 2]')['a'][1], tomli.loads('k = \"v\"')['k'], tomllib.loads('n = 3')['n'])\n\
         print(jinja2.Template('{{ x }}!').render(x='jinja'))\n\
         client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, text='mock ' + r.url.path)))\n\
         print(client.get('http://example.invalid/ok').text)\n\
         buf = io.StringIO(); Console(file=buf, width=40).print('[bold]rich[/bold]'); print(buf.getvalue().strip())",
    )
    .await?;
    assert_eq!(out.trim(), "bs4\n2 v 3\njinja!\nmock /ok\nrich", "{out}");
    Ok(())
}

#[tokio::test]
async fn node_npm_and_shell_tools_run() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(full_image())).await?;
    let sid = "rt-node";
    let out = sh(
        &ship,
        sid,
        "node -e 'console.log([1, 2, 3].map(x => x * 2).join(\",\"))'",
    )
    .await?;
    assert_eq!(out, "2,4,6");
    let out = sh(&ship, sid, "node --version && npm --version").await?;
    let mut lines = out.lines();
    let node = lines.next().unwrap_or_default();
    let major: u32 = node
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(major >= 18, "Node.js 18 or newer: {out}");
    assert!(
        lines
            .next()
            .is_some_and(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit())),
        "npm --version: {out}"
    );
    // npm works as the session user in the workspace (no network needed for `npm init`).
    let out = sh(
        &ship,
        sid,
        "npm init -y >/dev/null && node -p 'require(\"./package.json\").name'",
    )
    .await?;
    assert_eq!(out, "workspace");

    let out = sh(
        &ship,
        sid,
        "git --version && curl --version | head -n 1 && vim.tiny --version | head -n 1 \
         && nano --version | head -n 1 && less --version | head -n 1 \
         && git init -q repo && git -C repo status --short --branch",
    )
    .await?;
    for needle in [
        "git version",
        "curl ",
        "VIM",
        "nano",
        "less ",
        "## No commits yet",
    ] {
        assert!(out.contains(needle), "{needle:?} missing: {out}");
    }
    let out = sh(
        &ship,
        sid,
        "ls /usr/share/fonts/opentype/noto/ /usr/share/fonts/truetype/dejavu/",
    )
    .await?;
    assert!(
        out.contains("NotoSansCJK-Regular.ttc") && out.contains("DejaVuSans.ttf"),
        "{out}"
    );
    Ok(())
}

/// CJK text in a figure made by a plain script (not the agent's Python session) finds its
/// glyphs: the image's matplotlibrc falls back to Noto Sans CJK.
#[tokio::test]
async fn cjk_text_renders_in_script_figures() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(full_image())).await?;
    let sid = "rt-cjk";
    let script = "import warnings\n\
        import matplotlib\n\
        matplotlib.use('Agg')\n\
        import matplotlib.pyplot as plt\n\
        with warnings.catch_warnings(record=True) as caught:\n    \
            warnings.simplefilter('always')\n    \
            fig, ax = plt.subplots()\n    \
            ax.set_title('中文标题 テスト 한국어')\n    \
            fig.savefig('cjk.png')\n\
        print('missing:', [str(w.message) for w in caught if 'missing from' in str(w.message)])\n";
    ship.post(
        "/fs/write_file",
        sid,
        json!({"path": "cjk.py", "content": script}),
    )
    .await?;
    let out = sh(&ship, sid, "python3 cjk.py").await?;
    assert_eq!(out, "missing: []");
    Ok(())
}

/// `pip install` (shell) and `%pip install` (Python session) install into the session user's
/// own site, which the running interpreter sees at once; pip's scripts are on the shell's PATH.
/// The wheel is made in the test (no network).
#[tokio::test]
async fn pip_installs_into_the_session_users_site() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(full_image())).await?;
    let sid = "rt-pip";
    // The interpreter starts before anything is in the user's site.
    py(
        &ship,
        sid,
        "import base64, hashlib, zipfile\n\
         files = {\n    \
             'bay_probe/__init__.py': b\"def main():\\n    print('bay-probe ran')\\nVALUE = 42\\n\",\n    \
             'bay_probe-0.1.dist-info/METADATA': b'Metadata-Version: 2.1\\nName: bay-probe\\nVersion: 0.1\\n',\n    \
             'bay_probe-0.1.dist-info/WHEEL': b'Wheel-Version: 1.0\\nGenerator: bay-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n',\n    \
             'bay_probe-0.1.dist-info/entry_points.txt': b'[console_scripts]\\nbay-probe = bay_probe:main\\n',\n\
         }\n\
         def rec(name, data):\n    \
             h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()\n    \
             return f'{name},sha256={h},{len(data)}'\n\
         record = '\\n'.join([rec(n, d) for n, d in files.items()] + ['bay_probe-0.1.dist-info/RECORD,,', ''])\n\
         with zipfile.ZipFile('bay_probe-0.1-py3-none-any.whl', 'w') as z:\n    \
             for n, d in files.items():\n        z.writestr(n, d)\n    \
             z.writestr('bay_probe-0.1.dist-info/RECORD', record)",
    )
    .await?;

    let out = sh(
        &ship,
        sid,
        "pip install --no-index bay_probe-0.1-py3-none-any.whl 2>&1",
    )
    .await?;
    assert!(
        out.contains("Successfully installed bay-probe-0.1"),
        "{out}"
    );

    // The running interpreter imports it, from the user's site under the session's home.
    let out = py(
        &ship,
        sid,
        "import bay_probe, site\n\
         print(bay_probe.VALUE, bay_probe.__file__.startswith(site.getusersitepackages()))\n\
         print(site.getusersitepackages())",
    )
    .await?;
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("42 True"), "{out}");
    let user_site = lines.next().unwrap_or_default();
    assert!(
        user_site.starts_with("/home/ship_") && user_site.contains("/.local/lib/python3."),
        "{out}"
    );

    // %pip in the session, and the console script on the shell's PATH.
    let out = py(
        &ship,
        sid,
        "%pip install --no-index --force-reinstall bay_probe-0.1-py3-none-any.whl",
    )
    .await?;
    assert!(
        out.contains("Successfully installed bay-probe-0.1"),
        "{out}"
    );
    assert_eq!(sh(&ship, sid, "bay-probe").await?, "bay-probe ran");

    // Not in the image's site, nor visible to another session.
    let out = sh(
        &ship,
        sid,
        "python3 -m pip show bay-probe | grep '^Location:'",
    )
    .await?;
    assert_eq!(out, format!("Location: {user_site}"));
    let v = ship.py("rt-pip-other", "import bay_probe").await?;
    assert_eq!(v["success"], false, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("ModuleNotFoundError")),
        "{v}"
    );
    Ok(())
}

/// `ship:slim`: the agent with a plain python3 (no IPython, no data stack).
#[tokio::test]
async fn slim_image_runs_shell_and_plain_python() -> anyhow::Result<()> {
    let ship = Ship::start(ShipOptions::new(slim_image())).await?;
    let sid = "rt-slim";
    assert_eq!(ship.sh_ok(sid, "echo $((6 * 7))").await?, "42");
    py(&ship, sid, "x = 41").await?;
    assert_eq!(py(&ship, sid, "print('hi')\nx + 1").await?, "hi\n42");
    let v = ship.py(sid, "import numpy").await?;
    assert_eq!(v["success"], false, "slim has no numpy: {v}");
    let labels = ship_image_tests::docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"bay.ship.flavour\"}}",
        &slim_image(),
    ])?;
    assert_eq!(labels, "slim");
    Ok(())
}
