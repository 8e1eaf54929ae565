//! [`FirmwareStore`] on the kv tables: categories, builds, images.

use std::collections::BTreeSet;

use crate::kv::{ReadTransaction, ReadableTable, WriteTransaction};

use super::KvBackend;
use super::paging::{
    created_key, id_of, ids_under, index_desc, org_prefix, page_of, paged, visible_keys,
};
use super::record::{cat, encode, get_record};
use crate::tables::*;
use crate::{
    Build, BuildFields, BuildFilter, BuildId, Category, CategoryFields, CategoryId, FirmwareStore,
    Image, ImageId, OrgId, Page, PageRequest, Result, Scope, StoreError, Timestamp, Unique,
};

fn name_key(fields: &CategoryFields) -> Vec<u8> {
    cat(&[
        &org_prefix(fields.organization),
        fields.name.to_lowercase().as_bytes(),
    ])
}

fn insert_category(txn: &WriteTransaction, category: &Category) -> Result<()> {
    let mut names = txn.open_table(CATEGORY_NAMES)?;
    let key = name_key(&category.fields);
    if names.get(key.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::CategoryName));
    }
    names.insert(key.as_slice(), category.id.key())?;
    txn.open_table(CATEGORIES)?.insert(
        category.id.key(),
        encode("categories", category)?.as_slice(),
    )?;
    let created = created_key(category.created, category.id.bytes());
    txn.open_table(CATEGORIES_BY_ORG)?.insert(
        cat(&[&org_prefix(category.fields.organization), &created]).as_slice(),
        (),
    )?;
    Ok(())
}

fn remove_category(txn: &WriteTransaction, category: &Category) -> Result<()> {
    txn.open_table(CATEGORY_NAMES)?
        .remove(name_key(&category.fields).as_slice())?;
    txn.open_table(CATEGORIES)?.remove(category.id.key())?;
    let created = created_key(category.created, category.id.bytes());
    txn.open_table(CATEGORIES_BY_ORG)?
        .remove(cat(&[&org_prefix(category.fields.organization), &created]).as_slice())?;
    Ok(())
}

fn insert_build(txn: &WriteTransaction, build: &Build) -> Result<()> {
    if txn
        .open_table(CATEGORIES)?
        .get(build.fields.category.key())?
        .is_none()
    {
        return Err(StoreError::NotFound);
    }
    let version = cat(&[
        &build.fields.category.bytes(),
        build.fields.version.as_bytes(),
    ]);
    let mut versions = txn.open_table(BUILD_VERSIONS)?;
    if versions.get(version.as_slice())?.is_some() {
        return Err(StoreError::Unique(Unique::BuildVersion));
    }
    versions.insert(version.as_slice(), build.id.key())?;
    txn.open_table(BUILDS)?
        .insert(build.id.key(), encode("builds", build)?.as_slice())?;
    let created = created_key(build.created, build.id.bytes());
    txn.open_table(BUILDS_BY_CATEGORY)?.insert(
        cat(&[&build.fields.category.bytes(), &created]).as_slice(),
        (),
    )?;
    Ok(())
}

fn remove_build(txn: &WriteTransaction, build: &Build) -> Result<()> {
    let version = cat(&[
        &build.fields.category.bytes(),
        build.fields.version.as_bytes(),
    ]);
    txn.open_table(BUILD_VERSIONS)?.remove(version.as_slice())?;
    txn.open_table(BUILDS)?.remove(build.id.key())?;
    let created = created_key(build.created, build.id.bytes());
    txn.open_table(BUILDS_BY_CATEGORY)?
        .remove(cat(&[&build.fields.category.bytes(), &created]).as_slice())?;
    Ok(())
}

/// Removes a build's images; returns their ids.
fn remove_images_of(txn: &WriteTransaction, build: BuildId) -> Result<Vec<ImageId>> {
    let entries: Vec<(Vec<u8>, u128)> = {
        let index = txn.open_table(IMAGES_BY_BUILD)?;
        let lo = build.bytes().to_vec();
        let hi = cat(&[&build.bytes(), &[0xff; 1]]);
        index
            .range::<&[u8]>(lo.as_slice()..hi.as_slice())?
            .map(|e| e.map(|(k, v)| (k.value().to_vec(), v.value())))
            .collect::<std::result::Result<_, _>>()?
    };
    let mut index = txn.open_table(IMAGES_BY_BUILD)?;
    let mut images = txn.open_table(IMAGES)?;
    let mut ids = Vec::new();
    for (key, id) in entries {
        index.remove(key.as_slice())?;
        images.remove(id)?;
        ids.push(ImageId(uuid::Uuid::from_u128(id)));
    }
    Ok(ids)
}

/// The ids of every image of a build of `version` (in any category): what a device must run
/// to be on that version.
pub(super) fn images_of_version(
    txn: &ReadTransaction,
    version: &str,
) -> Result<std::collections::HashSet<u128>> {
    let mut builds = Vec::new();
    for entry in txn.open_table(BUILD_VERSIONS)?.iter()? {
        let (key, id) = entry?;
        // category (16 bytes) ‖ version
        if key.value().get(16..) == Some(version.as_bytes()) {
            builds.push(BuildId(uuid::Uuid::from_u128(id.value())));
        }
    }
    let index = txn.open_table(IMAGES_BY_BUILD)?;
    let mut images = std::collections::HashSet::new();
    for build in builds {
        let lo = build.bytes().to_vec();
        let hi = cat(&[&build.bytes(), &[0xff; 1]]);
        for entry in index.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            images.insert(entry?.1.value());
        }
    }
    Ok(images)
}

fn builds_of(txn: &WriteTransaction, category: CategoryId) -> Result<Vec<u128>> {
    ids_under(&txn.open_table(BUILDS_BY_CATEGORY)?, &category.bytes())
}

impl FirmwareStore for KvBackend {
    fn create_category(&self, fields: CategoryFields) -> Result<Category> {
        let now = Timestamp::now();
        let category = Category {
            id: CategoryId::new(),
            fields,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        if let Some(org) = category.fields.organization
            && txn.open_table(ORGANIZATIONS)?.get(org.key())?.is_none()
        {
            return Err(StoreError::NotFound);
        }
        insert_category(&txn, &category)?;
        txn.commit()?;
        Ok(category)
    }

    fn category(&self, id: CategoryId) -> Result<Option<Category>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(CATEGORIES)?, "categories", id.key())
    }

    fn update_category(&self, id: CategoryId, fields: CategoryFields) -> Result<Category> {
        let txn = self.db.begin_write()?;
        let mut category: Category =
            get_record(&txn.open_table(CATEGORIES)?, "categories", id.key())?
                .ok_or(StoreError::NotFound)?;
        remove_category(&txn, &category)?;
        category.fields = fields;
        category.modified = Timestamp::now();
        insert_category(&txn, &category)?;
        txn.commit()?;
        Ok(category)
    }

    fn delete_category(&self, id: CategoryId) -> Result<Vec<ImageId>> {
        let txn = self.db.begin_write()?;
        let category: Category = get_record(&txn.open_table(CATEGORIES)?, "categories", id.key())?
            .ok_or(StoreError::NotFound)?;
        let mut images = Vec::new();
        for build in builds_of(&txn, id)? {
            let build: Option<Build> = get_record(&txn.open_table(BUILDS)?, "builds", build)?;
            if let Some(build) = build {
                images.extend(remove_images_of(&txn, build.id)?);
                remove_build(&txn, &build)?;
            }
        }
        remove_category(&txn, &category)?;
        txn.commit()?;
        Ok(images)
    }

    fn list_categories(
        &self,
        scope: &Scope,
        own: Option<OrgId>,
        page: PageRequest,
    ) -> Result<Page<Category>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(CATEGORIES_BY_ORG)?;
        let keys = match own {
            Some(org) if scope.contains(org) => {
                index_desc(&index, &org.bytes(), [0; 24], [0xff; 24])?
                    .collect::<Result<Vec<_>>>()?
            }
            Some(_) => Vec::new(),
            None => visible_keys(&index, scope)?,
        };
        let ids = keys.iter().map(id_of).collect();
        page_of(&txn.open_table(CATEGORIES)?, "categories", ids, page)
    }

    fn create_build(&self, fields: BuildFields) -> Result<Build> {
        let now = Timestamp::now();
        let build = Build {
            id: BuildId::new(),
            fields,
            created: now,
            modified: now,
        };
        let txn = self.db.begin_write()?;
        insert_build(&txn, &build)?;
        txn.commit()?;
        Ok(build)
    }

    fn build(&self, id: BuildId) -> Result<Option<Build>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(BUILDS)?, "builds", id.key())
    }

    fn update_build(&self, id: BuildId, fields: BuildFields) -> Result<Build> {
        let txn = self.db.begin_write()?;
        let mut build: Build = get_record(&txn.open_table(BUILDS)?, "builds", id.key())?
            .ok_or(StoreError::NotFound)?;
        remove_build(&txn, &build)?;
        build.fields = fields;
        build.modified = Timestamp::now();
        insert_build(&txn, &build)?;
        txn.commit()?;
        Ok(build)
    }

    fn delete_build(&self, id: BuildId) -> Result<Vec<ImageId>> {
        let txn = self.db.begin_write()?;
        let build: Build = get_record(&txn.open_table(BUILDS)?, "builds", id.key())?
            .ok_or(StoreError::NotFound)?;
        let images = remove_images_of(&txn, id)?;
        remove_build(&txn, &build)?;
        txn.commit()?;
        Ok(images)
    }

    fn list_builds(
        &self,
        scope: &Scope,
        filter: &BuildFilter,
        page: PageRequest,
    ) -> Result<Page<Build>> {
        let txn = self.db.begin_read()?;
        let categories = txn.open_table(CATEGORIES_BY_ORG)?;
        let by_category = txn.open_table(BUILDS_BY_CATEGORY)?;
        let builds = txn.open_table(BUILDS)?;
        let mut category_ids: BTreeSet<u128> = match filter.organization {
            Some(org) if scope.contains(org) => {
                ids_under(&categories, &org.bytes())?.into_iter().collect()
            }
            Some(_) => BTreeSet::new(),
            None => visible_keys(&categories, scope)?
                .iter()
                .map(id_of)
                .collect(),
        };
        if let Some(only) = filter.category {
            category_ids.retain(|c| *c == only.key());
        }
        let mut keys = Vec::new();
        for category in category_ids {
            let prefix = CategoryId(uuid::Uuid::from_u128(category)).bytes();
            for key in index_desc(&by_category, &prefix, [0; 24], [0xff; 24])? {
                keys.push(key?);
            }
        }
        keys.sort_by(|a, b| b.cmp(a));
        let mut matching: Vec<Build> = Vec::new();
        for key in keys {
            if let Some(build) = get_record::<Build>(&builds, "builds", id_of(&key))?
                && filter
                    .version
                    .as_ref()
                    .is_none_or(|v| *v == build.fields.version)
                && filter.os.as_ref().is_none_or(|o| *o == build.fields.os)
            {
                matching.push(build);
            }
        }
        Ok(paged(matching, page))
    }

    fn create_image(&self, image: Image) -> Result<Image> {
        let txn = self.db.begin_write()?;
        if txn.open_table(BUILDS)?.get(image.build.key())?.is_none() {
            return Err(StoreError::NotFound);
        }
        let key = cat(&[&image.build.bytes(), image.kind.as_bytes()]);
        {
            let mut index = txn.open_table(IMAGES_BY_BUILD)?;
            if index.get(key.as_slice())?.is_some() {
                return Err(StoreError::Unique(Unique::ImageType));
            }
            index.insert(key.as_slice(), image.id.key())?;
        }
        txn.open_table(IMAGES)?
            .insert(image.id.key(), encode("images", &image)?.as_slice())?;
        txn.commit()?;
        Ok(image)
    }

    fn image(&self, id: ImageId) -> Result<Option<Image>> {
        let txn = self.db.begin_read()?;
        get_record(&txn.open_table(IMAGES)?, "images", id.key())
    }

    fn delete_image(&self, id: ImageId) -> Result<()> {
        let txn = self.db.begin_write()?;
        let image: Image = get_record(&txn.open_table(IMAGES)?, "images", id.key())?
            .ok_or(StoreError::NotFound)?;
        txn.open_table(IMAGES_BY_BUILD)?
            .remove(cat(&[&image.build.bytes(), image.kind.as_bytes()]).as_slice())?;
        txn.open_table(IMAGES)?.remove(id.key())?;
        txn.commit()?;
        Ok(())
    }

    fn list_images(
        &self,
        build: BuildId,
        kind: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Image>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(IMAGES_BY_BUILD)?;
        let table = txn.open_table(IMAGES)?;
        let lo = build.bytes().to_vec();
        let hi = cat(&[&build.bytes(), &[0xff; 1]]);
        let mut images: Vec<Image> = Vec::new();
        for entry in index.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
            let (_, id) = entry?;
            if let Some(image) = get_record::<Image>(&table, "images", id.value())?
                && kind.is_none_or(|k| k == image.kind)
            {
                images.push(image);
            }
        }
        images.sort_by_key(|i| std::cmp::Reverse((i.created, i.id)));
        Ok(paged(images, page))
    }
}
